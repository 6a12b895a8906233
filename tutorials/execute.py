"""Execute the tutorial notebooks in short mode and store them with their outputs.

Run from the repository root::

    python tutorials/execute.py                     # every notebook in tutorials/
    python tutorials/execute.py tutorials/quickstart.ipynb

Each notebook runs offline with ``CAPTUM_MAMBA_SHORT=1`` in a temporary working directory (the
notebooks write their own files to a temporary directory too), then is written back with its
outputs, figures embedded as PNG. Volatile metadata (execution timestamps, kernel versions) and
stderr streams (library warnings that name local paths) are dropped, so that a re-run changes
little besides the numbers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import nbclient
import nbformat

ROOT = Path(__file__).resolve().parents[1]


def strip_volatile(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    r"""
    Drop what changes on every run without meaning anything: timestamps and stderr streams.

    Args:
        notebook (NotebookNode): an executed notebook (changed in place).

    Returns:
        *NotebookNode*: the same notebook.
    """
    notebook.metadata.pop("language_info", None)
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
    return notebook


def execute(path: Path, timeout: int = 600) -> nbformat.NotebookNode:
    r"""
    Run one notebook top to bottom in short mode, in a temporary working directory.

    Args:
        path (Path): the notebook.
        timeout (int, optional): seconds allowed per cell. Default: 600

    Returns:
        *NotebookNode*: the executed notebook (volatile metadata stripped).
    """
    os.environ["CAPTUM_MAMBA_SHORT"] = "1"
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="captum_mamba_nb_") as work:
        client = nbclient.NotebookClient(
            notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": work}}
        )
        client.execute()
    return strip_volatile(notebook)


def main(argv: list[str] | None = None) -> int:
    r"""
    Execute and store the notebooks named (default: all in ``tutorials/``).

    Args:
        argv (list[str], optional): command-line arguments. Default: ``sys.argv[1:]``

    Returns:
        *int*: 0.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks (default: tutorials/*.ipynb)")
    args = parser.parse_args(argv)
    for path in args.notebooks or sorted((ROOT / "tutorials").glob("*.ipynb")):
        notebook = execute(path)
        nbformat.write(notebook, path)
        print(f"{path}: {path.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
