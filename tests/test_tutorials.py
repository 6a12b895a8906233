"""Every notebook in tutorials/ runs from top to bottom (short mode: CAPTUM_MAMBA_SHORT=1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat") if not os.environ.get("CI") else __import__("nbformat")
nbclient = pytest.importorskip("nbclient") if not os.environ.get("CI") else __import__("nbclient")

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("*.ipynb"))


def test_there_are_tutorial_notebooks():
    assert TUTORIALS, "tutorials/ has no notebooks"


@pytest.mark.slow
@pytest.mark.parametrize("notebook", TUTORIALS, ids=[path.stem for path in TUTORIALS])
def test_notebook_runs(notebook, tmp_path, monkeypatch):
    monkeypatch.setenv("CAPTUM_MAMBA_SHORT", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(notebook, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{notebook.name} failed:\n{error}")
    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert not errors
