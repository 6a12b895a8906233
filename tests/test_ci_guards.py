"""tests/ci_guards.py: with CI=true a skip fails unless the test is marked gpu; without CI nothing changes."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

SAMPLE = """
import pytest


def test_passes():
    pass


def test_skips():
    pytest.skip("no browser here")


@pytest.mark.skipif(True, reason="never on this machine")
def test_skipif():
    pass


@pytest.mark.gpu
def test_gpu_skips():
    pytest.skip("no CUDA")


@pytest.mark.gpu
@pytest.mark.skipif(True, reason="no CUDA")
def test_gpu_skipif():
    pass


@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert False
"""

MODULE_SKIP = """
import pytest

pytest.skip("optional package missing", allow_module_level=True)


def test_never_collected():
    pass
"""


def _run(folder: Path, ci: str | None) -> tuple[int, dict[str, str], str]:
    """Run pytest with the guard on ``folder``; the exit code, each test's outcome, and the output."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    junit = folder / f"junit-{ci}.xml"
    done = subprocess.run(
        # a collection error stops a run before its tests; this flag lets one run show both kinds
        [sys.executable, "-m", "pytest", "-p", "ci_guards", "-p", "no:cacheprovider", "-q", "-rA"]
        + ["--continue-on-collection-errors"]
        + ["--rootdir", str(folder), "--junitxml", str(junit), str(folder)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    outcomes = {}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name") or case.get("classname")] = kinds[0] if kinds else "passed"
    return done.returncode, outcomes, done.stdout + done.stderr


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs CUDA\n")
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    (tmp_path / "test_module_skip.py").write_text(MODULE_SKIP)
    return tmp_path


def test_in_ci_only_gpu_tests_may_skip(sample: Path) -> None:
    code, outcomes, output = _run(sample, "true")
    assert code == 1, output
    assert outcomes["test_passes"] == "passed"
    assert outcomes["test_skips"] == "failure"  # skipped while running: a failure
    assert outcomes["test_skipif"] == "error"  # skipped at setup: an error
    assert outcomes["test_gpu_skips"] == outcomes["test_gpu_skipif"] == "skipped"
    assert outcomes["test_xfail"] == "skipped"  # junit's name for xfail; not a skip, left alone
    assert outcomes["test_module_skip"] == "error"  # a module skipped at collection
    assert "only @pytest.mark.gpu tests may skip: no browser here" in output
    assert "optional package missing" in output


def test_outside_ci_skips_stay_skips(sample: Path) -> None:
    for ci in (None, "false"):
        code, outcomes, output = _run(sample, ci)
        assert code == 0, output
        assert outcomes["test_skips"] == outcomes["test_skipif"] == outcomes["test_gpu_skips"] == "skipped"
        assert "test_module_skip" not in outcomes or outcomes["test_module_skip"] == "skipped"
