"""Provenance of the benchmark scripts' JSON results: this checkout's commit, clean tree, versions, device.

The scripts run from a checkout (``python benchmarks/<script>.py``); this module puts that
checkout first on ``sys.path`` so that ``captum_mamba`` (and the commit recorded) is the
checkout's own, then uses :mod:`captum_mamba.evaluation.provenance`, the one implementation
shared with the package's report writers.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from captum_mamba.evaluation.provenance import (  # noqa: E402
    UntraceableResultError,
    check_destination,
    provenance,
    with_provenance,
)

__all__ = ["REPO_ROOT", "UntraceableResultError", "result_provenance", "with_provenance"]


def result_provenance(path: Path | None, device: Any = None) -> dict[str, Any]:
    """
    The provenance record of a benchmark run whose JSON goes to ``path``; call it before measuring.

    Args:
        path (Path, optional): the JSON file (``None``: no file, the record is still returned).
        device (optional): what the run measures on (a ``torch.device``, ``"cuda:0"``, ``"cpu"`` or
                    a description). Default: the CPU.

    Returns:
        *dict*: commit, dirty, versions, device, platform, date, argv.

    Raises:
        UntraceableResultError: ``path`` is under ``benchmarks/results/`` and this checkout is dirty.
    """
    if path is None:
        return provenance(device, repo=REPO_ROOT)
    return check_destination(path, device, repo=REPO_ROOT)
