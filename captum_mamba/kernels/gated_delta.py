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

**Per-channel decays** (Kimi Delta Attention): with ``α_t ∈ (0, 1]^{key_dim}`` the transition is
``(I - β_t k_t k_tᵀ) Diag(α_t)`` and every decay above becomes a vector over the key channels:
``Γ_t/Γ_j`` moves inside the products (``A_tj = β_t Σ_c k_tc k_jc Γ_tc/Γ_jc``, likewise ``M_tj``),
``diag(Γ) Q`` becomes ``Γ ⊙ Q``, ``diag(Γ_C/Γ) K`` becomes ``Γ_C/Γ ⊙ K`` and ``Γ_C S₀`` scales the
state's rows by the vector ``Γ_C``. The forward and the adjoint scan are unchanged (``Γ_C`` is a
``(key_dim, 1)`` column there, which is its own transpose as a diagonal map); only the operators
differ. The per-channel factors ``e^{γ_tc - γ_jc}`` (each at most 1) are formed through sub-blocks
and in slices of chunks (:func:`_decayed_products`), so the memory stays linear in the length.

Layout: ``q``, ``k`` ``(batch, length, key_heads, key_dim)``; ``v`` ``(batch, length, heads,
value_dim)``; ``g`` ``(batch, length, heads)`` or ``(batch, length, heads, key_dim)``; ``beta``
``(batch, length, heads)``; each key head serves ``heads // key_heads`` consecutive value heads.
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
    Q: Tensor  # (C, key_dim): entering state -> outputs, diag(Γ) Q (Γ ⊙ Q per channel)
    K: Tensor  # (C, key_dim): corrections -> leaving state, diag(Γ_C/Γ) K (Γ_C/Γ ⊙ K per channel)
    total: Tensor  # (1, 1), or (key_dim, 1) per channel: the chunk's whole decay Γ_C


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


#: Steps per sub-block of a chunk for the per-channel decay products (see :func:`_decayed_products`).
_SUB_BLOCK = 16
#: Elements of the per-channel factors formed at once: the chunks are taken in slices of at most this
#: many, so the transient memory stays bounded at any length.
_RATIO_BUDGET = 1 << 22


def _products_of_a_slice(q: Tensor, k: Tensor, gamma: Tensor, block: int) -> tuple[Tensor, Tensor]:
    r"""
    :func:`_decayed_products` for ``q``, ``k``, ``gamma`` ``(n, C, key_dim)`` and sub-blocks of
    ``block`` steps (``C`` a multiple of it).

    For ``t`` in sub-block ``I`` (starting at ``r``) and ``j`` in an earlier sub-block,
    ``e^{γ_t - γ_j} = e^{γ_t - γ_r} · e^{γ_r - γ_j}`` with both factors at most 1 (``j < r <= t``,
    the decays accumulate), so those products are one matrix product per sub-block:
    ``(k_t ⊙ e^{γ_t - γ_r}) · (k_j ⊙ e^{γ_r - γ_j})``. Inside a sub-block the factors
    ``e^{γ_t - γ_j}`` (``j <= t``) are formed element-wise, ``(block, block, key_dim)`` per sub-block.
    """
    n, size, channels = gamma.shape
    blocks = size // block
    first = gamma[:, ::block]  # (n, blocks, key_dim): γ at each sub-block's first step, the reference r
    to_first = torch.exp(gamma - first.repeat_interleave(block, dim=1))  # e^{γ_t - γ_r} <= 1
    rows_k, rows_q = (x * to_first for x in (k, q))
    # e^{γ_r - γ_j} for the steps j before sub-block I's start (<= 1), zero for the others
    earlier = (
        torch.arange(size, device=gamma.device)[None, :] < (torch.arange(blocks, device=gamma.device) * block)[:, None]
    )
    from_first = (first[:, :, None, :] - gamma[:, None, :, :]).masked_fill(~earlier[None, :, :, None], float("-inf"))
    columns = k[:, None] * torch.exp(from_first)  # (n, blocks, C, key_dim)
    across_k = rows_k.reshape(n, blocks, block, channels) @ columns.transpose(-1, -2)  # (n, blocks, block, C)
    across_q = rows_q.reshape(n, blocks, block, channels) @ columns.transpose(-1, -2)
    # inside each sub-block
    within_causal = torch.ones(block, block, dtype=torch.bool, device=gamma.device).tril()
    g = gamma.reshape(n, blocks, block, channels)
    decay = torch.exp((g[:, :, :, None] - g[:, :, None, :]).masked_fill(~within_causal[:, :, None], float("-inf")))
    kb, qb = k.reshape(n, blocks, block, channels), q.reshape(n, blocks, block, channels)
    inside_k = torch.einsum("nbtc,nbjc,nbtjc->nbtj", kb, kb, decay)
    inside_q = torch.einsum("nbtc,nbjc,nbtjc->nbtj", qb, kb, decay)
    # place the sub-blocks on the diagonal: (n, blocks, block, blocks, block) -> (n, C, C)
    eye = torch.eye(blocks, dtype=gamma.dtype, device=gamma.device)

    def assemble(across: Tensor, inside: Tensor) -> Tensor:
        diagonal = torch.einsum("nbtj,bd->nbtdj", inside, eye).reshape(n, size, size)
        return across.reshape(n, size, size) + diagonal

    return assemble(across_k, inside_k).tril(-1), assemble(across_q, inside_q)


def _decayed_products(q: Tensor, k: Tensor, gamma: Tensor) -> tuple[Tensor, Tensor]:
    r"""
    The per-channel decay's products inside each chunk, for ``q``, ``k``, ``gamma``
    ``(..., C, key_dim)`` (``gamma`` the cumulative log decay per key channel):

    ``K_tj = Σ_c k_tc k_jc e^{γ_tc - γ_jc}`` for ``j < t`` and ``M_tj = Σ_c q_tc k_jc e^{γ_tc - γ_jc}``
    for ``j <= t`` (zero elsewhere), both ``(..., C, C)``. Every factor is formed from differences of
    log decays and is at most 1 (never a ratio of two underflowing decays): across sub-blocks of
    :data:`_SUB_BLOCK` steps through a reference step between ``j`` and ``t`` (matrix products),
    inside them element-wise (:func:`_products_of_a_slice`). Slices of chunks keep the factors
    formed at once within :data:`_RATIO_BUDGET` elements.
    """
    lead, (size, channels) = gamma.shape[:-2], gamma.shape[-2:]
    q, k, gamma = (t.reshape(-1, size, channels) for t in (q, k, gamma))
    block = _SUB_BLOCK if size % _SUB_BLOCK == 0 else size
    step = max(1, _RATIO_BUDGET // (size * (block + size // block) * channels))
    kk, qk = [], []
    for start in range(0, gamma.shape[0], step):
        piece = slice(start, start + step)
        products = _products_of_a_slice(q[piece], k[piece], gamma[piece], block)
        kk.append(products[0])
        qk.append(products[1])
    return torch.cat(kk).reshape(*lead, size, size), torch.cat(qk).reshape(*lead, size, size)


def _operators(q: Tensor, k: Tensor, g: Tensor, beta: Tensor) -> _ChunkOperators:
    r"""
    The chunk operators from ``q``, ``k`` ``(batch, heads, chunks, C, key_dim)``, ``beta``
    ``(batch, heads, chunks, C)`` and the log decays ``g``: ``(batch, heads, chunks, C)`` (one per
    head and step, Gated DeltaNet) or ``(batch, heads, chunks, C, key_dim)`` (one per key channel,
    Kimi Delta Attention). Padded steps (``β = 0``, ``g = 0``, ``k = 0``) write nothing and decay
    nothing.
    """
    size = beta.shape[-1]
    eye = torch.eye(size, dtype=q.dtype, device=q.device)
    if g.dim() == q.dim():  # per key channel: the ratios Γ_t/Γ_j are vectors inside the products
        gamma = g.cumsum(-2)  # log Γ_t, (..., C, key_dim)
        kk, M = _decayed_products(q, k, gamma)
        system = eye + beta[..., :, None] * kk
        decayed_k, decayed_q = k * torch.exp(gamma), q * torch.exp(gamma)  # Γ_t ⊙ k_t, Γ_t ⊙ q_t
        leaving = torch.exp(gamma[..., -1:, :] - gamma)  # Γ_C / Γ_t per channel
        total = torch.exp(gamma[..., -1, :])[..., :, None]  # (key_dim, 1): scales the state's rows
    else:
        gamma = g.cumsum(-1)  # log Γ_t
        causal = torch.ones(size, size, dtype=torch.bool, device=g.device).tril()
        # Γ_t / Γ_j for j <= t (at most 1), zero above the diagonal
        ratio = torch.exp((gamma[..., :, None] - gamma[..., None, :]).masked_fill(~causal, float("-inf")))
        system = eye + beta[..., :, None] * (k @ k.transpose(-1, -2)) * ratio.tril(-1)
        M = (q @ k.transpose(-1, -2)) * ratio
        decayed_k, decayed_q = k * torch.exp(gamma)[..., None], q * torch.exp(gamma)[..., None]
        leaving = torch.exp(gamma[..., -1:] - gamma)[..., None]  # Γ_C / Γ_t
        total = torch.exp(gamma[..., -1:])[..., None]  # (1, 1)
    W = torch.linalg.solve_triangular(system, torch.diag_embed(beta), upper=False, unitriangular=True)
    P = torch.linalg.solve_triangular(system, beta[..., None] * decayed_k, upper=False, unitriangular=True)
    return _ChunkOperators(W, P, M, decayed_q, k * leaving, total)


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
    per_channel = (*v.shape[:3], k.shape[-1])
    if v.shape[2] % k.shape[2] or g.shape not in (v.shape[:3], per_channel) or beta.shape != v.shape[:3]:
        raise ValueError(
            f"g must be (batch, length, heads) or, per key channel, (batch, length, heads, key_dim), beta "
            f"(batch, length, heads), and heads a multiple of key_heads; got heads {v.shape[2]}, key_heads "
            f"{k.shape[2]}, g {tuple(g.shape)}, beta {tuple(beta.shape)}"
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
        g (Tensor): log decays ``<= 0``: ``(batch, length, heads)`` (one per head, Gated DeltaNet) or
                    ``(batch, length, heads, key_dim)`` (one per key channel, Kimi Delta Attention);
                    detached.
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
