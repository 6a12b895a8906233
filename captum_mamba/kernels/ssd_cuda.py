"""Mamba-2's SSD scan on mamba-ssm's Triton kernels with ``dt``, ``A``, ``B``, ``C`` held constant.

The SSM rule needs the gradient with respect to ``x`` only. mamba-ssm's autograd function for
``mamba_chunk_scan_combined`` forms every gradient in its backward (``dt``, ``A``, ``B``, ``C``,
``D``, the chunk states' decay terms) whatever is asked for. This node runs the same forward
kernels and a backward of only the kernels that ``dx`` depends on:

* ``dstates``: the gradient reaching each chunk's final state, ``Cᵀ dout`` decayed within the
  chunk (``_chunk_scan_bwd_dstates``), then passed backwards over the chunks with the chunk
  decays (``_state_passing_bwd``);
* ``dx``: within each chunk the transposed causal kernel ``(C Bᵀ ∘ decay)ᵀ dout`` plus the
  chunk's ``B``-projection of ``dstates``, times ``dt`` (``_chunk_scan_chunk_state_bwd_dx``),
  plus ``D dout`` when the skip is given.

The kernels are mamba-ssm's private functions; where they are missing (another release), the
public ``mamba_chunk_scan_combined`` runs instead (same values, the full backward).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
from torch import Tensor


@cache
def _private_kernels() -> dict[str, Any] | None:
    """mamba-ssm's SSD building blocks, or None if this release does not have them by these names."""
    try:
        from mamba_ssm.ops.triton import ssd_combined
        from mamba_ssm.ops.triton.ssd_bmm import _bmm_chunk_fwd
        from mamba_ssm.ops.triton.ssd_chunk_scan import _chunk_scan_bwd_dstates
        from mamba_ssm.ops.triton.ssd_state_passing import _state_passing_bwd

        return {
            "forward": ssd_combined._mamba_chunk_scan_combined_fwd,
            "dx": ssd_combined._chunk_scan_chunk_state_bwd_dx,
            "bmm": _bmm_chunk_fwd,
            "dstates": _chunk_scan_bwd_dstates,
            "state_passing_bwd": _state_passing_bwd,
        }
    except (ImportError, AttributeError):
        return None


def held_constant_chunk_scan(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int, D: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    r"""
    The SSD scan with gradient to ``x`` only (``dt``, ``A``, ``B``, ``C``, ``D`` held constant).

    Args:
        x (Tensor): ``(batch, length, heads, head_dim)``; carries relevance.
        dt (Tensor): ``(batch, length, heads)``, already processed (bias, softplus, limits).
        A (Tensor): ``(heads,)``, float32.
        B (Tensor): ``(batch, length, groups, state)``.
        C (Tensor): ``(batch, length, groups, state)``.
        chunk_size (int): the kernels' chunk length.
        D (Tensor, optional): the skip ``(heads,)`` or ``(heads, head_dim)``.

    Returns:
        *tuple* ``(y, final_state)``: ``(batch, length, heads, head_dim)`` and
        ``(batch, heads, head_dim, state)``.
    """
    kernels = _private_kernels()
    if kernels is None:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

        return mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=D, return_final_states=True)
    return _HeldConstantChunkScan.apply(x, dt.detach(), A.detach(), B.detach(), C.detach(), chunk_size, D)


class _HeldConstantChunkScan(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int, D: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        kernels = _private_kernels()
        x, B, C = x.contiguous(), B.contiguous(), C.contiguous()
        out, _, dt_processed, dA_cumsum, _, final_states = kernels["forward"](x, dt, A, B, C, chunk_size, D=D)[:6]
        D = None if D is None else D.detach()
        ctx.set_materialize_grads(False)  # the final state feeds only a cache: its gradient stays None
        ctx.save_for_backward(x, dt_processed, dA_cumsum, B, C, *(() if D is None else (D,)))
        ctx.chunk_size = chunk_size
        return out, final_states

    @staticmethod
    def backward(ctx, dout: Tensor, dfinal_states: Tensor | None) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        if dout is None:
            return (None,) * 7
        kernels = _private_kernels()
        x, dt, dA_cumsum, B, C, *rest = ctx.saved_tensors
        D = rest[0] if rest else None
        dout = dout.contiguous()
        batch, _, heads, head_dim = x.shape
        state = B.shape[-1]
        chunks = dA_cumsum.shape[2]
        CB = kernels["bmm"](C, B, ctx.chunk_size, output_dtype=torch.float32)
        dstates = kernels["dstates"](C, dA_cumsum, dout, dtype=torch.float32)
        # The backward state passing also forms the decays' gradient from the states; with the
        # decays held constant those are not needed: zeros stand in for them.
        no_states = torch.zeros(batch, chunks, heads, head_dim * state, device=x.device, dtype=torch.float32)
        final = None if dfinal_states is None else dfinal_states.reshape(batch, heads, head_dim * state).float()
        dstates, *_ = kernels["state_passing_bwd"](
            no_states,
            dA_cumsum[:, :, :, -1],
            dstates.reshape(batch, chunks, heads, head_dim * state),
            dfinal_states=final,
            dstates_dtype=x.dtype,
            chunk_size=ctx.chunk_size,
        )
        dstates = dstates.reshape(batch, chunks, heads, head_dim, state)
        dx, *_ = kernels["dx"](x, dt, dA_cumsum, B, CB, dout, dstates, D=D)
        return dx, None, None, None, None, None, None
