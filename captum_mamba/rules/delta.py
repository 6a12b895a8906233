r"""The gated delta rule's LRP rule (Gated DeltaNet, Kimi Delta Attention): decay, writing strength, keys and
queries held constant.

In ``S_t = α_t (I - β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ``, ``o_t = S_tᵀ q_t`` (Kimi Delta Attention:
``S_t = (I - β_t k_t k_tᵀ) Diag(α_t) S_{t-1} + β_t k_t v_tᵀ`` with one decay per key channel) the decay
``α_t``, the writing strength ``β_t``, the keys and the queries (after their convolution,
activation and L2 norm) are held constant, as MambaLRP's SSM rule holds the selection
(``Δ``, ``B``, ``C``) constant: the output is then a linear map of the values, and Gradient x
Input through it redistributes the output's relevance onto the values exactly
(``Σ v·∂o/∂v = o``; derivation in ``docs/linear_attention.md``). Relevance flows through ``v``
only; the paths producing ``q``, ``k``, ``α``, ``β`` carry none.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import cache
from typing import Any

import torch
from torch import Tensor

from captum_mamba.errors import MissingDependencyError
from captum_mamba.kernels.cuda import _importable
from captum_mamba.kernels.gated_delta import DEFAULT_CHUNK, differentiable_gated_delta, linear_gated_delta
from captum_mamba.options import BACKENDS, current_options
from captum_mamba.rules.base import MambaLRPRule


class _FlaMissing(MissingDependencyError):
    """flash-linear-attention is not installed (it is no dependency of captum-mamba, nor of an extra)."""

    def __init__(self) -> None:
        ImportError.__init__(
            self,
            "The CUDA gated-delta-rule backend needs flash-linear-attention, which is not installed "
            "(pip install flash-linear-attention); backend='auto' or 'torch' uses the PyTorch kernel",
        )


@cache
def load_fla_chunk_gated_delta_rule() -> Callable[..., Any]:
    r"""
    flash-linear-attention's Triton ``chunk_gated_delta_rule`` (not a dependency of the package).

    Raises:
        MissingDependencyError: if ``fla`` is not installed.
    """
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    except (ImportError, OSError) as error:
        raise _FlaMissing() from error
    return chunk_gated_delta_rule


def _fla_gated_delta(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    r"""
    The dispatch point to flash-linear-attention's chunk kernel: ``q``, ``k``, ``g``, ``beta``
    detached, so its backward's only gradient that reaches the graph is the values' (the rule).
    Its kernels take half precision with as many query/key heads as value heads.
    """
    kernel = load_fla_chunk_gated_delta_rule()
    heads = v.shape[2]
    q, k = (t.detach().repeat_interleave(heads // t.shape[2], dim=2).to(v.dtype) for t in (q, k))
    out, last_state = kernel(
        q, k, v, g.detach().float(), beta.detach().to(v.dtype), scale=scale, output_final_state=True
    )
    return out, last_state.detach()


_FLA_DTYPES = (torch.float16, torch.bfloat16)


def probe_backward(kernel: Callable[..., Any], device: torch.device, dtype: torch.dtype) -> str | None:
    r"""
    Run ``kernel`` (``chunk_gated_delta_rule``'s signature) forward and backward on a tiny input.

    Returns:
        *str* or *None*: the error it raised (e.g. flash-linear-attention 0.6 refusing its
        backward with Triton older than 3.7.1 on Hopper GPUs), or None if it ran.
    """
    generator = torch.Generator(device=device).manual_seed(0)
    q, k = (
        torch.nn.functional.normalize(torch.randn(1, 64, 1, 16, device=device, generator=generator), dim=-1).to(dtype)
        for _ in range(2)
    )
    v = torch.randn(1, 64, 1, 16, device=device, generator=generator, dtype=dtype, requires_grad=True)
    g = -torch.rand(1, 64, 1, device=device, generator=generator)
    beta = torch.rand(1, 64, 1, device=device, generator=generator).to(dtype)
    try:
        out, _ = kernel(q, k, v, g, beta, scale=0.25, output_final_state=True)
        out.float().sum().backward()
    except Exception as error:  # noqa: BLE001 (any failure means: do not dispatch there)
        return f"{type(error).__name__}: {error}"
    return None


@cache
def fla_backward_works(device: torch.device, dtype: torch.dtype) -> bool:
    r"""
    Whether flash-linear-attention's chunk kernel runs forward and backward on ``device`` in
    ``dtype`` (probed once per device and dtype). If not, the rule keeps its PyTorch kernel and
    warns once with the reason.
    """
    problem = probe_backward(load_fla_chunk_gated_delta_rule(), device, dtype)
    if problem is not None:
        warnings.warn(
            f"flash-linear-attention's gated delta rule does not run its backward here ({problem[:300]}); "
            "the gated delta rule uses its PyTorch kernel instead",
            stacklevel=2,
        )
    return problem is None


class GatedDeltaRule(MambaLRPRule):
    r"""
    The gated delta rule with ``α`` (decay), ``β``, ``k`` and ``q`` held constant: the output is
    linear in the values ``v``, and relevance flows through them only.

    Args:
        chunk (int, optional): time steps per chunk of the PyTorch kernel. Default: 64
        backend (str, optional): ``"torch"`` (the linear-time chunked PyTorch kernel,
                    :func:`~captum_mamba.kernels.gated_delta.linear_gated_delta`), ``"cuda"``
                    (flash-linear-attention's chunk kernel with ``q``, ``k``, ``g``, ``β``
                    detached; needs ``fla``, half precision, one decay per head) or ``"auto"`` (the fla
                    kernel for CUDA half-precision tensors when it imports, else PyTorch). Per-channel
                    decays (Kimi Delta Attention) always take the PyTorch kernel. Default: "auto"
    """

    def __init__(self, chunk: int = DEFAULT_CHUNK, backend: str = "auto") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.chunk = chunk
        self.backend = backend

    def _use_fla(self, v: Tensor, per_channel: bool = False) -> bool:
        r"""
        Whether the fla kernel runs: CUDA half-precision values with one decay per head (the dispatch
        point of the rule). Per-channel decays (Kimi Delta Attention) always take the PyTorch kernel.
        """
        backend = self.backend if self.backend != "auto" else current_options().backend
        if per_channel:
            if backend == "cuda":
                raise NotImplementedError(
                    "the CUDA backend covers one decay per head (fla's chunk_gated_delta_rule); per-channel "
                    "decays (Kimi Delta Attention) take the PyTorch kernel: use backend='auto' or 'torch'"
                )
            return False
        if backend == "cuda":
            load_fla_chunk_gated_delta_rule()
            if not v.is_cuda or v.dtype not in _FLA_DTYPES:
                raise ValueError(
                    f"flash-linear-attention's kernel takes CUDA float16 / bfloat16 tensors, not {v.dtype} on "
                    f"{v.device}; use backend='auto' or 'torch'"
                )
            return True
        return (
            backend == "auto"
            and v.is_cuda
            and v.dtype in _FLA_DTYPES
            and _importable(load_fla_chunk_gated_delta_rule)
            and fla_backward_works(v.device, v.dtype)
        )

    def apply(
        self, q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, scale: float | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""
        Args:
            q (Tensor): L2-normalised queries ``(batch, length, key_heads, key_dim)``; held constant.
            k (Tensor): L2-normalised keys, same shape; held constant.
            v (Tensor): values ``(batch, length, heads, value_dim)``; carry relevance.
            g (Tensor): log decays ``log α``: ``(batch, length, heads)``, or ``(batch, length, heads,
                        key_dim)`` per key channel (Kimi Delta Attention); held constant.
            beta (Tensor): writing strengths ``(batch, length, heads)``; held constant.
            scale (float, optional): factor on the queries. Default: ``key_dim ** -0.5``

        Returns:
            *tuple* ``(output, last_state)``: ``(batch, length, heads, value_dim)`` (linear in
            ``v``) and ``(batch, heads, key_dim, value_dim)`` (no gradient).
        """
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        if self._use_fla(v, per_channel=g.dim() == 4):
            return _fla_gated_delta(q, k, v, g, beta, scale)
        return linear_gated_delta(q, k, v, g, beta, scale, self.chunk)


def plain_gated_delta(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, scale: float | None = None
) -> tuple[Tensor, Tensor]:
    """The gated delta rule with gradients to every input: the computation when the rule is switched off."""
    return differentiable_gated_delta(q, k, v, g, beta, scale)


__all__ = ["GatedDeltaRule", "load_fla_chunk_gated_delta_rule", "plain_gated_delta"]
