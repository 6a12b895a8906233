r"""The gated delta rule (Gated DeltaNet) in linear time, in pure PyTorch.

Per head, with a state ``S`` of shape ``(key_dim, value_dim)`` starting at zero::

    S_t = α_t (I - β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ,        o_t = S_tᵀ q_t

with the decay ``α_t = exp(g_t)`` (``g_t <= 0``), the writing strength ``β_t`` and L2-normalised
``k_t``, ``q_t`` (``q_t`` also scaled). Writing ``u_t = β_t (v_t - α_t S_{t-1}ᵀ k_t)``, the
correction the step writes, the state is ``S_t = α_t S_{t-1} + k_t u_tᵀ``.

**Chunks.** Inside a chunk of ``C`` steps entering with the state ``S₀``, let ``γ_t`` be the
cumulative log decay from the chunk's start (``Γ_t = exp(γ_t)``). Unrolling gives
``α_t S_{t-1} = Γ_t S₀ + Σ_{j<t} (Γ_t/Γ_j) k_j u_jᵀ``, so the corrections solve the unit lower
triangular system

.. math::

    (I + A)\,U = \mathrm{diag}(β)\,V - \mathrm{diag}(β Γ)\,K S_0, \qquad
    A_{tj} = β_t \tfrac{Γ_t}{Γ_j} k_tᵀ k_j \ (j < t),

and the outputs and the state leaving the chunk are

.. math::

    O = \mathrm{diag}(Γ)\,Q S_0 + M U,\quad M_{tj} = \tfrac{Γ_t}{Γ_j} q_tᵀ k_j\ (j \le t), \qquad
    S_C = Γ_C S_0 + (\mathrm{diag}(Γ_C/Γ) K)ᵀ U.

With ``W = (I + A)^{-1} diag(β)`` and ``P = (I + A)^{-1} diag(βΓ) K`` (one triangular solve per
chunk, all chunks at once): ``U = W V - P S₀``. Only the chunks' entering states are sequential
(``length / C`` steps); ratios of decays are always formed as ``exp(γ_t - γ_j)``, never divided.

**MambaLRP's rule** holds ``q``, ``k``, ``α`` and ``β`` constant: every operator above is then a
constant, the output is linear in ``v`` and its backward is the transposed recurrence, a reverse
scan over the chunks with an adjoint state ``Λ`` (the gradient of the state leaving the chunk)::

    dU = Mᵀ dO + (diag(Γ_C/Γ) K) Λ,     dV = Wᵀ dU,     Λ ← (diag(Γ) Q)ᵀ dO + Γ_C Λ - Pᵀ dU

(:func:`linear_gated_delta`). :func:`differentiable_gated_delta` runs the same chunked forward
under autograd, with gradients to every input (the rule switched off).

Layout: ``q``, ``k`` ``(batch, length, key_heads, key_dim)``; ``v`` ``(batch, length, heads,
value_dim)``; ``g``, ``beta`` ``(batch, length, heads)``; each key head serves
``heads // key_heads`` consecutive value heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: Time steps per chunk (flash-linear-attention's, and transformers' PyTorch path's).
DEFAULT_CHUNK = 64


@dataclass
class _ChunkOperators:
    """The constant operators of every chunk, ``(batch, heads, chunks, ...)``."""

    W: Tensor  # (C, C): values -> corrections, (I + A)^{-1} diag(β)
    P: Tensor  # (C, key_dim): entering state -> corrections (subtracted), (I + A)^{-1} diag(βΓ) K
    M: Tensor  # (C, C): corrections -> outputs, causal (Γ_t/Γ_j) q_t·k_j
    Q: Tensor  # (C, key_dim): entering state -> outputs, diag(Γ) Q
    K: Tensor  # (C, key_dim): corrections -> leaving state, diag(Γ_C/Γ) K
    total: Tensor  # (1, 1): the chunk's whole decay Γ_C


def _heads_first(x: Tensor, chunk: int, heads: int | None = None) -> Tensor:
    r"""
    ``(batch, length, heads, ...)`` -> ``(batch, heads, chunks, chunk, ...)``, zero-padded to whole
    chunks; key heads are repeated to ``heads`` value heads (a constant copy) when given.
    """
    if heads is not None and x.shape[2] != heads:
        x = x.repeat_interleave(heads // x.shape[2], dim=2)
    length = x.shape[1]
    pad = -length % chunk
    if pad:
        x = torch.cat([x, x.new_zeros(x.shape[0], pad, *x.shape[2:])], dim=1)
    x = x.movedim(1, 2)  # (batch, heads, padded length, ...)
    return x.reshape(*x.shape[:2], -1, chunk, *x.shape[3:])


def _operators(q: Tensor, k: Tensor, g: Tensor, beta: Tensor) -> _ChunkOperators:
    r"""
    The chunk operators from ``q``, ``k`` ``(batch, heads, chunks, C, key_dim)`` and ``g``,
    ``beta`` ``(batch, heads, chunks, C)``. Padded steps (``β = 0``, ``g = 0``, ``k = 0``) write
    nothing and decay nothing.
    """
    size = g.shape[-1]
    gamma = g.cumsum(-1)  # log Γ_t
    causal = torch.ones(size, size, dtype=torch.bool, device=g.device).tril()
    # Γ_t / Γ_j for j <= t (at most 1), zero above the diagonal
    ratio = torch.exp((gamma[..., :, None] - gamma[..., None, :]).masked_fill(~causal, float("-inf")))
    strict = ratio.tril(-1)
    system = torch.eye(size, dtype=q.dtype, device=q.device) + beta[..., :, None] * (k @ k.transpose(-1, -2)) * strict
    W = torch.linalg.solve_triangular(system, torch.diag_embed(beta), upper=False, unitriangular=True)
    P = torch.linalg.solve_triangular(system, (beta * torch.exp(gamma))[..., None] * k, upper=False, unitriangular=True)
    M = (q @ k.transpose(-1, -2)) * ratio
    total = torch.exp(gamma[..., -1:])
    leaving = torch.exp(gamma[..., -1:] - gamma)  # Γ_C / Γ_t
    return _ChunkOperators(W, P, M, q * torch.exp(gamma)[..., None], k * leaving[..., None], total[..., None])


def _forward(ops: _ChunkOperators, v: Tensor) -> tuple[Tensor, Tensor]:
    r"""
    Outputs ``(batch, heads, chunks, C, value_dim)`` and the last state ``(batch, heads, key_dim,
    value_dim)`` for the values ``v`` ``(batch, heads, chunks, C, value_dim)``; differentiable.
    """
    chunks = v.shape[2]
    state = v.new_zeros(*v.shape[:2], ops.K.shape[-1], v.shape[-1])
    within = ops.W @ v  # the corrections' part that does not depend on the entering state, all chunks at once
    outputs = []
    for n in range(chunks):
        corrections = within[:, :, n] - ops.P[:, :, n] @ state
        outputs.append(ops.Q[:, :, n] @ state + ops.M[:, :, n] @ corrections)
        state = ops.total[:, :, n] * state + ops.K[:, :, n].transpose(-1, -2) @ corrections
    return torch.stack(outputs, dim=2), state


def _adjoint(ops: _ChunkOperators, grad: Tensor) -> Tensor:
    r"""
    The transposed recurrence: the values' gradient ``(batch, heads, chunks, C, value_dim)`` for
    the outputs' gradient ``grad`` of the same shape (the last state has no gradient).
    """
    chunks = grad.shape[2]
    adjoint = grad.new_zeros(*grad.shape[:2], ops.K.shape[-1], grad.shape[-1])  # dL/d(state leaving chunk n)
    grad_corrections = torch.empty_like(grad)
    for n in range(chunks - 1, -1, -1):
        g_out = grad[:, :, n]
        d_corrections = ops.M[:, :, n].transpose(-1, -2) @ g_out + ops.K[:, :, n] @ adjoint
        grad_corrections[:, :, n] = d_corrections
        adjoint = (
            ops.Q[:, :, n].transpose(-1, -2) @ g_out
            + ops.total[:, :, n] * adjoint
            - ops.P[:, :, n].transpose(-1, -2) @ d_corrections
        )
    return ops.W.transpose(-1, -2) @ grad_corrections


def _chunked(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, scale: float, chunk: int):
    heads = v.shape[2]
    qc, kc = _heads_first(q * scale, chunk, heads), _heads_first(k, chunk, heads)
    gc, bc, vc = _heads_first(g, chunk), _heads_first(beta, chunk), _heads_first(v, chunk)
    return _operators(qc, kc, gc, bc), vc


def _time_major(x: Tensor, length: int) -> Tensor:
    """``(batch, heads, chunks, C, dim)`` -> ``(batch, length, heads, dim)`` without the padding."""
    x = x.reshape(*x.shape[:2], -1, x.shape[-1])[:, :, :length]
    return x.movedim(2, 1).contiguous()


class _LinearGatedDelta(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx, v: Tensor, q: Tensor, k: Tensor, g: Tensor, beta: Tensor, scale: float, chunk: int
    ) -> tuple[Tensor, Tensor]:
        ops, vc = _chunked(q, k, v, g, beta, scale, chunk)
        out, last_state = _forward(ops, vc)
        ctx.save_for_backward(q, k, g, beta)
        ctx.scale, ctx.chunk, ctx.length = scale, chunk, v.shape[1]
        ctx.mark_non_differentiable(last_state)
        return _time_major(out, v.shape[1]), last_state

    @staticmethod
    def backward(ctx, grad_out: Tensor, _grad_state: Tensor):  # type: ignore[override]
        q, k, g, beta = ctx.saved_tensors
        heads = grad_out.shape[2]
        # the operators again from the constants (memory: only q, k, g, β are kept between the passes)
        ops = _operators(
            _heads_first(q * ctx.scale, ctx.chunk, heads),
            _heads_first(k, ctx.chunk, heads),
            _heads_first(g, ctx.chunk),
            _heads_first(beta, ctx.chunk),
        )
        grad_v = _adjoint(ops, _heads_first(grad_out.to(q.dtype), ctx.chunk))
        return _time_major(grad_v, ctx.length), None, None, None, None, None, None


def _promote(v: Tensor, *others: Tensor) -> tuple[Tensor, ...]:
    """Everything in ``v``'s dtype widened to at least float32 (as the models compute the rule)."""
    dtype = torch.promote_types(v.dtype, torch.float32)
    return tuple(t.to(dtype) for t in (v, *others))


def _check(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor) -> None:
    if q.shape != k.shape or q.dim() != 4 or v.dim() != 4 or q.shape[:2] != v.shape[:2]:
        raise ValueError(
            f"q, k must be (batch, length, key_heads, key_dim) and v (batch, length, heads, value_dim); "
            f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if v.shape[2] % k.shape[2] or g.shape != v.shape[:3] or beta.shape != v.shape[:3]:
        raise ValueError(
            f"g and beta must be (batch, length, heads) and heads a multiple of key_heads; got heads "
            f"{v.shape[2]}, key_heads {k.shape[2]}, g {tuple(g.shape)}, beta {tuple(beta.shape)} "
            "(a per-channel decay, as Kimi's, is not this kernel's)"
        )


def linear_gated_delta(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    scale: float | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[Tensor, Tensor]:
    r"""
    The gated delta rule with ``q``, ``k``, ``g`` and ``beta`` held constant: gradients flow to
    ``v`` only, through the transposed recurrence (see the module docstring). Linear time and
    memory in the length.

    Args:
        q (Tensor): L2-normalised queries ``(batch, length, key_heads, key_dim)``; detached.
        k (Tensor): L2-normalised keys, same shape; detached.
        v (Tensor): values ``(batch, length, heads, value_dim)``; carry relevance.
        g (Tensor): log decays ``(batch, length, heads)``, ``<= 0``; detached.
        beta (Tensor): writing strengths ``(batch, length, heads)``; detached.
        scale (float, optional): factor on the queries. Default: ``key_dim ** -0.5``
        chunk (int, optional): time steps per chunk. Default: 64

    Returns:
        *tuple* ``(output, last_state)``: ``(batch, length, heads, value_dim)`` and
        ``(batch, heads, key_dim, value_dim)`` (no gradient), in ``v``'s dtype widened to at
        least float32.
    """
    _check(q, k, v, g, beta)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    v, q, k, g, beta = _promote(v, q.detach(), k.detach(), g.detach(), beta.detach())
    return _LinearGatedDelta.apply(v, q, k, g, beta, scale, chunk)


def differentiable_gated_delta(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    scale: float | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[Tensor, Tensor]:
    r"""
    The same chunked recurrence as :func:`linear_gated_delta`, recorded by autograd with
    gradients to every argument (what plain Gradient x Input differentiates; the rule switched
    off). Args and Returns: as :func:`linear_gated_delta` (here ``last_state`` is detached).
    """
    _check(q, k, v, g, beta)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    v, q, k, g, beta = _promote(v, q, k, g, beta)
    ops, vc = _chunked(q, k, v, g, beta, scale, chunk)
    out, last_state = _forward(ops, vc)
    return _time_major(out, v.shape[1]), last_state.detach()


__all__ = ["DEFAULT_CHUNK", "differentiable_gated_delta", "linear_gated_delta"]
