"""The provenance record of result files: commit, clean tree, versions; refusing untraceable results."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from captum_mamba.evaluation.provenance import (
    ALLOW_DIRTY_ENV,
    UntraceableResultError,
    check_destination,
    check_model_destination,
    git_state,
    is_results_path,
    provenance,
    with_provenance,
)
from captum_mamba.evaluation.report import write_json


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git checkout with one commit: ``code.py`` and a ``benchmarks/results/`` folder."""
    root = tmp_path / "checkout"
    (root / "benchmarks" / "results").mkdir(parents=True)
    (root / "code.py").write_text("x = 1\n")
    (root / "benchmarks" / "results" / "old.json").write_text("{}\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "first")
    return root


def test_clean_checkout_is_recorded_with_versions(repo: Path) -> None:
    record = provenance(repo=repo)
    assert record["commit"] == _git(repo, "rev-parse", "HEAD") and len(record["commit"]) == 40
    assert record["dirty"] is False and "changed_paths" not in record
    for key in ("python", "torch", "transformers", "captum", "device", "platform", "date", "argv"):
        assert record[key], key
    assert record["device"].startswith("cpu")


def test_changes_to_code_make_it_dirty_but_results_do_not(repo: Path) -> None:
    (repo / "benchmarks" / "results" / "old.json").write_text('{"new": 1}\n')  # outputs, not code
    (repo / "benchmarks" / "results" / "fresh.json").write_text("{}\n")
    assert git_state(repo)[1] is False
    (repo / "code.py").write_text("x = 2\n")
    commit, dirty, changed = git_state(repo)
    assert dirty is True and changed == [" M code.py"]
    (repo / "code.py").write_text("x = 1\n")
    (repo / "scratch.py").write_text("")  # an untracked file could change what runs
    assert git_state(repo)[1] is True


def test_outside_a_checkout_there_is_no_commit(tmp_path: Path) -> None:
    assert git_state(tmp_path) == (None, None, [])


def test_results_folder_is_recognised(tmp_path: Path) -> None:
    assert is_results_path(tmp_path / "benchmarks" / "results" / "needle" / "x.json")
    assert not is_results_path(tmp_path / "benchmarks" / "x.json")
    assert not is_results_path(tmp_path / "results" / "x.json")


def test_dirty_tree_is_refused_for_results_only(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_DIRTY_ENV, raising=False)
    target = repo / "benchmarks" / "results" / "run.json"
    assert check_destination(target, repo=repo)["dirty"] is False
    (repo / "code.py").write_text("x = 3\n")
    with pytest.raises(UntraceableResultError, match="uncommitted changes.* M code.py"):
        check_destination(target, repo=repo)
    assert check_destination(repo / "scratch" / "run.json", repo=repo)["dirty"] is True  # elsewhere: recorded
    monkeypatch.setenv(ALLOW_DIRTY_ENV, "1")
    with pytest.warns(UserWarning, match="NOT a traceable result"):
        record = check_destination(target, repo=repo)
    assert record["dirty"] is True and record["changed_paths"] == [" M code.py"]


def test_training_into_a_shipped_model_folder_needs_a_clean_tree(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_DIRTY_ENV, raising=False)
    shipped = repo / "package" / "assets"
    assert check_model_destination(shipped, [shipped], repo=repo)["dirty"] is False
    (repo / "code.py").write_text("x = 4\n")
    with pytest.raises(UntraceableResultError, match="refusing to train into the shipped folder"):
        check_model_destination(shipped, [repo / "other", shipped], repo=repo)
    assert check_model_destination(repo / "scratch", [shipped], repo=repo)["dirty"] is True  # elsewhere: recorded
    monkeypatch.setenv(ALLOW_DIRTY_ENV, "1")
    with pytest.warns(UserWarning, match="writing anyway"):
        assert check_model_destination(shipped, [shipped], repo=repo)["dirty"] is True


def test_no_checkout_is_refused_for_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_DIRTY_ENV, raising=False)
    with pytest.raises(UntraceableResultError, match="not in a git checkout"):
        check_destination(tmp_path / "benchmarks" / "results" / "x.json", repo=tmp_path)


def test_with_provenance_adds_one_entry() -> None:
    record = {"commit": "a" * 40, "dirty": False}
    assert with_provenance({"x": 1}, record) == {"x": 1, "provenance": record}
    assert with_provenance({"x": 1, "provenance": record}, record)["provenance"] == record
    with pytest.raises(ValueError, match="different 'provenance'"):
        with_provenance({"provenance": {"commit": "b"}}, record)


def test_report_writer_stamps_its_json(tmp_path: Path) -> None:
    path = write_json({"rows": [1, 2]}, tmp_path / "out" / "report.json")
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["rows"] == [1, 2]
    assert set(document["provenance"]) >= {"commit", "dirty", "python", "torch", "transformers", "captum", "device"}
