"""Every notebook in tutorials/ runs from top to bottom (short mode: CAPTUM_MAMBA_SHORT=1), writes
nothing into the repository, and is stored executed, with its figures."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("*.ipynb"))
IDS = [path.stem for path in TUTORIALS]


def _images(cells: list) -> int:
    return sum("image/png" in output.get("data", {}) for cell in cells for output in cell.get("outputs", []))


def test_there_are_tutorial_notebooks():
    assert TUTORIALS, "tutorials/ has no notebooks"


@pytest.mark.parametrize("notebook", TUTORIALS, ids=IDS)
def test_notebook_is_stored_executed_with_figures(notebook):
    # stored executed in short mode (python tutorials/execute.py), so that they render when browsed
    stored = json.loads(notebook.read_text(encoding="utf-8"))
    code = [cell for cell in stored["cells"] if cell["cell_type"] == "code"]
    assert all(cell["execution_count"] for cell in code), f"{notebook.name}: not executed; run tutorials/execute.py"
    assert _images(code) >= 1, f"{notebook.name}: no figure stored"
    assert not [o for cell in code for o in cell["outputs"] if o["output_type"] == "error"]
    assert notebook.stat().st_size < 500_000, f"{notebook.name}: {notebook.stat().st_size} bytes"
    assert not any("execution" in cell.get("metadata", {}) for cell in stored["cells"])  # no timestamps
    plain = [
        "".join(output["data"]["text/plain"])
        for cell in code
        for output in cell["outputs"]
        if "text/plain" in output.get("data", {})
    ]
    assert not [text for text in plain if re.search(r" at 0x[0-9a-f]+", text)]  # addresses change every run


@pytest.mark.slow
@pytest.mark.parametrize("notebook", TUTORIALS, ids=IDS)
def test_notebook_runs(notebook, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat") if not os.environ.get("CI") else __import__("nbformat")
    nbclient = pytest.importorskip("nbclient") if not os.environ.get("CI") else __import__("nbclient")
    monkeypatch.setenv("CAPTUM_MAMBA_SHORT", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    before = _untracked()
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{notebook.name} failed:\n{error}")
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert not [o for cell in code for o in cell.outputs if o.output_type == "error"]
    assert _images(code) >= 1  # the inline backend still draws its figures
    assert not list(tmp_path.iterdir()), "the notebook wrote into its working directory"
    assert _untracked() == before, "the notebook wrote files into the repository"


def _untracked() -> set[str]:
    try:
        listed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return set()
    return {line[3:] for line in listed.splitlines() if line.startswith("??")}
