"""Every JSON result under benchmarks/results/ can be traced to a clean commit of this repository.

The writers (``captum_mamba.evaluation.provenance``; ``benchmarks/README.md``, *Provenance*) put a
``"provenance"`` object in each file: the commit (``git rev-parse HEAD``) of a tree without
uncommitted changes, and the versions and device the numbers came from. A file without it, or
from a dirty tree, is not a result the docs may quote: regenerate it with the command in
``benchmarks/README.md`` / ``docs/`` from a clean checkout.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FILES = sorted(RESULTS.rglob("*.json"))
COMMIT = re.compile(r"[0-9a-f]{40}")


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60, check=False)


def _full_history() -> bool:
    """Whether this is a git checkout with its whole history (a shallow clone cannot place old commits)."""
    done = _git("rev-parse", "--is-shallow-repository")
    return done.returncode == 0 and done.stdout.strip() == "false"


def test_there_are_results() -> None:
    assert FILES, f"no JSON under {RESULTS}"


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(RESULTS)) for p in FILES])
def test_result_names_a_clean_commit(path: Path) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict) and isinstance(document.get("provenance"), dict), (
        f"{path.relative_to(ROOT)} has no provenance record: regenerate it from a clean checkout"
    )
    record = document["provenance"]
    commit = record.get("commit")
    assert isinstance(commit, str) and COMMIT.fullmatch(commit), f"commit {commit!r} is not 40 hex digits"
    assert record.get("dirty") is False, f"written from a tree with uncommitted changes: {record.get('changed_paths')}"
    for key in ("python", "torch", "transformers", "captum", "device"):
        assert isinstance(record.get(key), str) and record[key], f"provenance lacks {key!r}"
    if _full_history():
        done = _git("merge-base", "--is-ancestor", commit, "HEAD")
        assert done.returncode == 0, f"commit {commit} is not in this branch's history: {done.stderr.strip()}"
