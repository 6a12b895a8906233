"""Optional CUDA kernels (the ``gpu`` extra: mamba-ssm, causal-conv1d), imported only when asked for."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import torch
from torch import Tensor

from captum_mamba.errors import MissingDependencyError


@cache
def load_selective_scan_fn() -> Callable[..., Any]:
    r"""
    ``mamba_ssm``'s fused ``selective_scan_fn`` (Mamba-1 scan).

    Returns:
        *Callable*: the kernel entry point.

    Raises:
        MissingDependencyError: if ``mamba-ssm`` is not installed.
    """
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except (ImportError, OSError) as error:
        raise MissingDependencyError("mamba-ssm", "The CUDA selective-scan backend", "gpu") from error
    return selective_scan_fn


@cache
def load_chunk_scan_combined() -> Callable[..., Any]:
    r"""
    ``mamba_ssm``'s Triton ``mamba_chunk_scan_combined`` (Mamba2 SSD scan).

    Raises:
        MissingDependencyError: if ``mamba-ssm`` (with Triton) is not installed.
    """
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except (ImportError, OSError) as error:
        raise MissingDependencyError("mamba-ssm", "The CUDA SSD (Mamba2) scan backend", "gpu") from error
    return mamba_chunk_scan_combined


@cache
def load_causal_conv1d_fn() -> Callable[..., Any]:
    r"""
    ``causal_conv1d``'s fused depthwise causal convolution.

    Raises:
        MissingDependencyError: if ``causal-conv1d`` is not installed.
    """
    try:
        from causal_conv1d import causal_conv1d_fn
    except (ImportError, OSError) as error:
        raise MissingDependencyError("causal-conv1d", "The CUDA causal-convolution backend", "gpu") from error
    return causal_conv1d_fn


def _importable(loader: Callable[[], Any]) -> bool:
    try:
        loader()
    except MissingDependencyError:
        return False
    return True


#: The dtypes mamba-ssm's and causal-conv1d's kernels compute in (no float64).
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def use_kernel(tensor: Tensor, loader: Callable[[], Any], backend: str) -> bool:
    r"""
    Whether ``loader``'s kernel runs on ``tensor`` under ``backend`` (see
    :class:`~captum_mamba.options.ExplanationOptions`). ``"auto"`` takes the kernels for CUDA
    tensors of a dtype they compute in (float32, float16, bfloat16) and the PyTorch path
    otherwise (float64 inputs, CPU tensors, kernels not installed).

    Raises:
        MissingDependencyError: ``backend="cuda"`` without the kernel's package.
        ValueError: ``backend="cuda"`` on a CPU tensor or a float64 one.
    """
    if backend == "cuda":
        loader()
        if not tensor.is_cuda:
            raise ValueError("the CUDA backend needs CUDA tensors; use backend='torch' on CPU")
        if tensor.dtype not in KERNEL_DTYPES:
            raise ValueError(
                f"the CUDA kernels compute in float32, float16 or bfloat16, not {tensor.dtype}; "
                "use backend='auto' or 'torch' for float64 explanations"
            )
        return True
    return backend == "auto" and tensor.is_cuda and tensor.dtype in KERNEL_DTYPES and _importable(loader)


def kernels_available() -> bool:
    """Whether mamba-ssm's selective-scan kernel can be imported."""
    return _importable(load_selective_scan_fn)


def ssd_kernels_available() -> bool:
    """Whether mamba-ssm's Mamba2 SSD kernel can be imported."""
    return _importable(load_chunk_scan_combined)


def conv_kernels_available() -> bool:
    """Whether causal-conv1d can be imported."""
    return _importable(load_causal_conv1d_fn)
