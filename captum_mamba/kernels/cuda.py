"""Optional mamba-ssm CUDA kernels (the ``gpu`` extra), imported only when asked for."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from captum_mamba.errors import MissingDependencyError


@cache
def load_selective_scan_fn() -> Callable[..., Any]:
    r"""
    ``mamba_ssm``'s fused ``selective_scan_fn``.

    Returns:
        *Callable*: the kernel entry point.

    Raises:
        MissingDependencyError: if ``mamba-ssm`` is not installed.
    """
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError as error:
        raise MissingDependencyError("mamba-ssm", "The CUDA selective-scan backend", "gpu") from error
    return selective_scan_fn


def kernels_available() -> bool:
    """Whether the CUDA kernels can be imported."""
    try:
        load_selective_scan_fn()
    except MissingDependencyError:
        return False
    return True
