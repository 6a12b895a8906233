"""The documentation (MkDocs, API pulled from the docstrings) builds with warnings as errors."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_docs_build_strict(tmp_path):
    # the build runs as `python -m mkdocs` with this interpreter, so look for the module, not a `mkdocs` on PATH
    # (the README's `.venv/bin/python -m pytest` has .venv/bin off PATH); in CI a skip fails (tests/ci_guards.py)
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "site" / "api" / "attribution" / "index.html").is_file()
    assert "MambaLRP" in (tmp_path / "site" / "api" / "attribution" / "index.html").read_text(encoding="utf-8")
