r"""Mamba-2's SSD scan with ``delta``, ``A``, ``B`` and ``C`` held constant, chunked, in pure PyTorch.

Layout (Hugging Face's Mamba-2 mixer): ``x`` ``(batch, length, heads, head_dim)``, ``delta``
``(batch, length, heads)``, ``A`` ``(heads,)`` (one scalar decay rate per head), ``B``, ``C``
``(batch, length, groups, state)`` with the heads split evenly over the groups (head ``k`` reads
group ``k // (heads // groups)``). The recurrence, per head, with ``u_t = delta_t x_t``::

    h_t = exp(delta_t A) h_{t-1} + B_t u_t^T      (h_0 = 0; h_t is (state, head_dim))
    y_t = h_t^T C_t

With the selection held constant (MambaLRP's SSM rule) ``y`` is a linear map of ``x``,
``y = M u`` with, for ``s <= t``,

    M[t, s] = <C_t, B_s> exp(a_{s+1} + ... + a_t),   a_r = delta_r A <= 0,

and its backward is the transposed map ``grad_u = M^T grad_y``. Because the decay is a scalar
per head, both directions are a few batched matrix products per chunk of ``Q`` steps (the
chunked "state space duality" form of Dao and Gu, 2024) instead of ``length`` sequential
steps: inside a chunk ``M`` is an explicit ``(Q, Q)`` matrix, and between chunks only the
``(state, head_dim)`` state of each head is carried, one step per chunk. Time and memory are
linear in the length (``Q`` is fixed); no ``(batch, length, heads, head_dim, state)`` tensor is
ever built. Every exponent is a sum of ``a_r <= 0``, so every exponential lies in ``[0, 1]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: Time steps per chunk of the CPU SSD scan (a property of the computation only: any chunk
#: gives the same map; 64 balances the (Q, Q) blocks against the per-chunk state steps).
DEFAULT_SSD_CHUNK = 64


class _Chunks:
    r"""
    The held-constant selection of one SSD scan, cut into chunks of ``Q`` steps: everything the
    forward and the backward (transposed) map share, built once by :meth:`build`. ``length`` is
    padded to whole chunks with ``delta = 0`` (decay 1, no input): the padding changes neither
    the outputs nor the last state.

    Tensors (``n`` chunks, ``G`` groups, ``Hg`` heads per group), in :attr:`tensors` order:

    * ``weights`` ``(batch, n, G, Hg, Q, Q)``: ``M`` inside each chunk,
      ``<C_i, B_j> exp(cs_i - cs_j)`` for ``i >= j``, else 0;
    * ``B``, ``C`` ``(batch, n, G, Q, state)``, contiguous;
    * ``from_start`` ``(batch, n, G, Hg, Q, 1)``: ``exp(cs_i)``, the decay from the chunk's start;
    * ``to_end`` ``(batch, n, G, Hg, Q, 1)``: ``exp(cs_{Q-1} - cs_j)``, the decay to its end;
    * ``carry`` ``(batch, n, G, Hg, 1, 1)``: ``exp(cs_{Q-1})``, the decay over the whole chunk;

    where ``cs_i = a_0 + ... + a_i`` within the chunk.
    """

    def __init__(self, length: int, size: int, groups: int, tensors: tuple[Tensor, ...]) -> None:
        self.weights, self.B, self.C, self.from_start, self.to_end, self.carry = tensors
        self.batch, self.count, _, per_group = self.weights.shape[:4]
        self.length, self.size, self.groups = length, size, groups
        self.heads = groups * per_group
        self.pad = self.count * size - length

    @property
    def tensors(self) -> tuple[Tensor, ...]:
        """What :meth:`transposed` needs (for ``save_for_backward``, so that checkpointing sees it)."""
        return self.weights, self.B, self.C, self.from_start, self.to_end, self.carry

    @classmethod
    def build(cls, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk: int) -> _Chunks:
        r"""
        Args:
            delta (Tensor): ``(batch, length, heads)``.
            A (Tensor): ``(heads,)``.
            B (Tensor): ``(batch, length, groups, state)``.
            C (Tensor): ``(batch, length, groups, state)``.
            chunk (int): steps per chunk (at most ``length`` are used).
        """
        batch, length, heads = delta.shape
        groups, state = B.shape[2], B.shape[3]
        size = max(1, min(chunk, length))
        count = -(-length // size)
        pad = count * size - length
        if pad:  # zero steps at the end: delta = 0, B = C = 0
            delta, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (delta, B, C))
        shape = (batch, count, groups, heads // groups)
        B = B.reshape(batch, count, size, groups, state).transpose(2, 3).contiguous()
        C = C.reshape(batch, count, size, groups, state).transpose(2, 3).contiguous()
        # cs[..., i] = a_0 + ... + a_i within each chunk, per head: (batch, n, heads, Q)
        cs = (delta * A).view(batch, count, size, heads).transpose(2, 3).cumsum(-1)
        last = cs[..., -1:]
        from_start = cs.exp().view(*shape, size, 1)
        to_end = (last - cs).exp_().view(*shape, size, 1)
        carry = last.exp().view(*shape, 1, 1)
        # exp(cs_i - cs_j) = exp(a_{j+1} + ... + a_i) <= 1 on and below the diagonal (i >= j).
        # Above it the exponent is positive and could overflow: it is clamped at 0 (on the
        # diagonal and below, where the exact value is <= 0, clamping only removes rounding),
        # and the causal mask is applied to <C_i, B_j>, a per-group (not per-head) factor.
        exponent = cs.unsqueeze(-1) - cs.unsqueeze(-2)
        decay = exponent.clamp_max_(0.0).exp_().view(*shape, size, size)
        weights = decay.mul_((C @ B.transpose(-1, -2)).tril_().unsqueeze(3))
        return cls(length, size, groups, (weights, B, C, from_start, to_end, carry))

    def time_major(self, t: Tensor) -> Tensor:
        r"""
        A view of a ``(batch, n, G, Hg, Q, width)`` tensor as ``(batch, n, Q, G, Hg, width)``: the
        time-major order of the mixer's ``(batch, length, heads, width)`` tensors, chunked.
        """
        return t.permute(0, 1, 4, 2, 3, 5)

    def chunked(self, t: Tensor) -> Tensor:
        r"""
        A view of ``(batch, length, heads, width)`` (``width`` 1 allowed) as
        ``(batch, n, Q, G, Hg, width)``, zero-padded to whole chunks (a copy only then).
        """
        if self.pad:
            t = F.pad(t, (0, 0, 0, 0, 0, self.pad))
        batch, _, heads, width = t.shape
        return t.view(batch, self.count, self.size, self.groups, heads // self.groups, width)

    def unchunked(self, t: Tensor) -> Tensor:
        """The inverse of :meth:`chunked` for a contiguous ``t``: ``(batch, length, heads, width)``."""
        merged = t.view(self.batch, self.count * self.size, self.heads, t.shape[-1])
        return merged[:, : self.length] if self.pad else merged

    def forward(self, u: Tensor) -> tuple[Tensor, Tensor]:
        r"""
        ``y = M u`` and the last state.

        Args:
            u (Tensor): ``delta * x`` in the chunk layout ``(batch, n, G, Hg, Q, head_dim)``,
                        contiguous.

        Returns:
            *tuple* ``(y, last)``: ``y`` in ``u``'s layout, ``last`` ``(batch, G, Hg, state, head_dim)``.
        """
        y = self.weights @ u  # inside each chunk
        # each chunk's contribution to the state at its end: sum_j exp(cs_{Q-1} - cs_j) B_j u_j^T
        local = self.B.transpose(-1, -2).unsqueeze(3) @ (u * self.to_end)  # (batch, n, G, Hg, state, P)
        # the state entering chunk c: h_0 = 0, h_{c+1} = carry_c h_c + local_c (one step per chunk)
        entering = torch.empty_like(local)
        entering[:, 0].zero_()
        for c in range(1, self.count):
            torch.addcmul(local[:, c - 1], self.carry[:, c - 1], entering[:, c - 1], out=entering[:, c])
        last = torch.addcmul(local[:, -1], self.carry[:, -1], entering[:, -1])
        # the entering state's share of each output: exp(cs_i) <C_i, h_c>
        y.addcmul_(self.C.unsqueeze(3) @ entering, self.from_start)
        return y, last

    def transposed(self, grad_y: Tensor) -> Tensor:
        r"""
        ``grad_u = M^T grad_y``: the forward's adjoint, run backwards over the chunks.

        Args:
            grad_y (Tensor): the gradient of ``y`` in the chunk layout, contiguous.

        Returns:
            *Tensor* the gradient of ``u`` in the same layout.
        """
        grad_u = self.weights.transpose(-1, -2) @ grad_y  # inside each chunk
        # the gradient of the state entering chunk c through that chunk's outputs:
        # sum_i exp(cs_i) C_i grad_y_i^T
        direct = self.C.transpose(-1, -2).unsqueeze(3) @ (grad_y * self.from_start)
        # gradient of h_{c+1} (what chunk c's local state receives): g_n = 0 (the last state
        # carries no gradient), g_c = direct_c + carry_c g_{c+1}
        leaving = torch.empty_like(direct)
        leaving[:, -1].zero_()
        for c in range(self.count - 2, -1, -1):
            torch.addcmul(direct[:, c + 1], self.carry[:, c + 1], leaving[:, c + 1], out=leaving[:, c])
        # through local_c = sum_j exp(cs_{Q-1} - cs_j) B_j u_j^T
        grad_u.addcmul_(self.B.unsqueeze(3) @ leaving, self.to_end)
        return grad_u


class _HeldConstantSSD(torch.autograd.Function):
    r"""
    ``x -> (M (delta x) + D x, last_state)`` of the SSD scan; the backward is the transposed scan,
    ``grad_x = delta M^T grad_y + D grad_y``, to ``x`` only.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, chunk: int
    ) -> tuple[Tensor, Tensor]:
        chunks = _Chunks.build(delta, A, B, C, chunk)
        batch, _, heads, width = x.shape
        groups, per_group = chunks.groups, heads // chunks.groups
        # u = delta * x, written straight into the chunk layout (the product is the copy)
        u = x.new_empty(batch, chunks.count, groups, per_group, chunks.size, width)
        torch.mul(chunks.chunked(x), chunks.chunked(delta.unsqueeze(-1)), out=chunks.time_major(u))
        y, last = chunks.forward(u)
        del u
        # back to time-major with the D skip (``y + D x``) in the same pass
        out = x.new_empty(batch, chunks.count, chunks.size, groups, per_group, width)
        if D is None:
            out.copy_(chunks.time_major(y))
        else:
            skip = D.reshape(groups, per_group, -1)
            torch.addcmul(chunks.time_major(y), chunks.chunked(x), skip, out=out)
        ctx.sizes = (chunks.length, chunks.size, chunks.groups)
        ctx.save_for_backward(delta, D, *chunks.tensors)
        state = last.reshape(batch, heads, last.shape[-2], width).transpose(-1, -2)
        ctx.mark_non_differentiable(state)
        return chunks.unchunked(out.view(batch, chunks.count, chunks.size, heads, width)), state

    @staticmethod
    def backward(ctx, grad_y: Tensor, _grad_last: Tensor):  # type: ignore[override]
        delta, D, *tensors = ctx.saved_tensors
        chunks = _Chunks(*ctx.sizes, tuple(tensors))
        batch, _, heads, width = grad_y.shape
        groups, per_group = chunks.groups, heads // chunks.groups
        grad = grad_y.new_empty(batch, chunks.count, groups, per_group, chunks.size, width)
        chunks.time_major(grad).copy_(chunks.chunked(grad_y))
        grad_u = chunks.transposed(grad)
        # grad_x = delta * grad_u (+ D grad_y), back to time-major in the same pass
        x_grad = grad_y.new_empty(batch, chunks.count, chunks.size, groups, per_group, width)
        torch.mul(chunks.time_major(grad_u), chunks.chunked(delta.unsqueeze(-1)), out=x_grad)
        x_grad = chunks.unchunked(x_grad.view(batch, chunks.count, chunks.size, heads, width))
        if D is not None:
            x_grad.addcmul_(grad_y, D.reshape(heads, -1))
        return x_grad, None, None, None, None, None, None


def held_constant_ssd(
    x: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    chunk: int = DEFAULT_SSD_CHUNK,
) -> tuple[Tensor, Tensor]:
    r"""
    Mamba-2's SSD scan with its ``D`` skip, with ``delta``, ``A``, ``B``, ``C`` (and ``D``) held
    constant: a linear map of ``x``, whose backward is the transposed scan (gradients to ``x``
    only, none computed for the selection). Linear time and memory in the length.

    Computes in ``float32`` or wider (half-precision inputs are upcast, like the CUDA kernel); a
    ``float64`` run stays in ``float64``.

    Args:
        x (Tensor): ``(batch, length, heads, head_dim)``; carries relevance.
        delta (Tensor): ``(batch, length, heads)``, positive steps (after bias, softplus and clamp).
        A (Tensor): ``(heads,)``, negative decay rates.
        B (Tensor): ``(batch, length, groups, state)``.
        C (Tensor): ``(batch, length, groups, state)``.
        D (Tensor, optional): skip weights ``(heads,)`` or ``(heads * head_dim,)``: ``y += D x``.
                    Default: None
        chunk (int, optional): time steps per chunk (any value gives the same map, up to rounding).
                    Default: 64

    Returns:
        *tuple* ``(y, last_state)``: ``y`` ``(batch, length, heads, head_dim)`` in the promoted
        dtype and the state after the last step ``(batch, heads, head_dim, state)`` (no gradient).
    """
    heads, groups = x.shape[2], B.shape[2]
    if heads % groups:
        raise ValueError(f"{heads} heads cannot be split evenly over {groups} groups")
    dtype = torch.promote_types(x.dtype, torch.float32)
    delta, A, B, C = (t.detach().to(dtype) for t in (delta, A, B, C))
    skip = None if D is None else D.detach().to(dtype)
    return _HeldConstantSSD.apply(x.to(dtype), delta, A, B, C, skip, chunk)
