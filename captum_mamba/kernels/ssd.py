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

    Three layouts of a ``(batch, length, heads, head_dim)`` tensor, chunked (``n`` chunks, ``G``
    groups, ``k`` heads per group, ``P = head_dim``):

    * time-major ``(batch, n, Q, G, k, P)``: the mixer's own order (a view);
    * group-major ``(batch, n, G, Q, k, P)``: per group a ``(Q, k P)`` matrix, for the products
      with ``B`` and ``C``, which all heads of a group share (one product for the group);
    * head-major ``(batch, n, G, k, Q, P)``: per head a ``(Q, P)`` matrix, for the per-head
      ``(Q, Q)`` blocks.

    Tensors, in :attr:`tensors` order (``cs_i = a_0 + ... + a_i`` within a chunk):

    * ``weights`` ``(batch, n, G, k, Q, Q)``: ``M`` inside each chunk,
      ``<C_i, B_j> exp(cs_i - cs_j)`` for ``i >= j``, else 0;
    * ``B``, ``C`` ``(batch, n, G, Q, state)``, contiguous;
    * ``delta`` ``(batch, n, Q, heads)``;
    * ``from_start`` ``(batch, n, Q, heads)``: ``exp(cs_i)``, the decay from the chunk's start;
    * ``end_delta`` ``(batch, n, Q, heads)``: ``exp(cs_{Q-1} - cs_j) delta_j``, the decay to the
      chunk's end times the step;
    * ``carry`` ``(batch, n, heads)``: ``exp(cs_{Q-1})``, the decay over the whole chunk.
    """

    def __init__(self, length: int, groups: int, tensors: tuple[Tensor, ...]) -> None:
        self.weights, self.B, self.C, self.delta, self.from_start, self.end_delta, self.carry = tensors
        self.batch, self.count, self.size, self.heads = self.delta.shape
        self.length, self.groups, self.per_group = length, groups, self.heads // groups
        self.pad = self.count * self.size - length

    @property
    def tensors(self) -> tuple[Tensor, ...]:
        """What :meth:`transposed` needs (for ``save_for_backward``, so that checkpointing sees it)."""
        return self.weights, self.B, self.C, self.delta, self.from_start, self.end_delta, self.carry

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
        B = B.reshape(batch, count, size, groups, state).transpose(2, 3).contiguous()
        C = C.reshape(batch, count, size, groups, state).transpose(2, 3).contiguous()
        delta = delta.reshape(batch, count, size, heads)
        cs = (delta * A).cumsum(2)  # cs[:, c, i] = a_0 + ... + a_i in chunk c
        last = cs[:, :, -1:]
        from_start = cs.exp()
        end_delta = (last - cs).exp_().mul_(delta)
        carry = last.squeeze(2).exp()
        # exp(cs_i - cs_j) = exp(a_{j+1} + ... + a_i) <= 1 on and below the diagonal (i >= j).
        # Above it the exponent is positive and could overflow: it is clamped at 0 (on the
        # diagonal and below, where the exact value is <= 0, clamping only removes rounding),
        # and the causal mask is applied to <C_i, B_j>, a per-group (not per-head) factor.
        per_head = cs.transpose(2, 3).contiguous()  # (batch, n, heads, Q): the blocks come out contiguous
        exponent = per_head.unsqueeze(-1) - per_head.unsqueeze(-2)
        decay = exponent.clamp_max_(0.0).exp_().view(batch, count, groups, heads // groups, size, size)
        weights = decay.mul_((C @ B.transpose(-1, -2)).tril_().unsqueeze(3))
        return cls(length, groups, (weights, B, C, delta, from_start, end_delta, carry))

    # --- layouts ----------------------------------------------------------------------------

    def time_major(self, t: Tensor) -> Tensor:
        r"""
        ``(batch, length, heads, width)`` as a time-major ``(batch, n, Q, G, k, width)`` view,
        zero-padded to whole chunks (a copy only then).
        """
        if self.pad:
            t = F.pad(t, (0, 0, 0, 0, 0, self.pad))
        return t.view(self.batch, self.count, self.size, self.groups, self.per_group, t.shape[-1])

    def factor(self, t: Tensor) -> Tensor:
        """A ``(batch, n, Q, heads)`` factor (``delta``, ``from_start``, ``end_delta``) as ``(batch, n, Q, G, k, 1)``."""
        return t.view(self.batch, self.count, self.size, self.groups, self.per_group, 1)

    def empty(self, like: Tensor, layout: str, width: int) -> tuple[Tensor, Tensor]:
        r"""
        A new tensor in ``layout`` (``"time"``, ``"group"`` or ``"head"``) and its time-major view.
        """
        b, n, q, g, k = self.batch, self.count, self.size, self.groups, self.per_group
        if layout == "time":
            t = like.new_empty(b, n, q, g, k, width)
            return t, t
        if layout == "group":
            t = like.new_empty(b, n, g, q, k, width)
            return t, t.permute(0, 1, 3, 2, 4, 5)
        t = like.new_empty(b, n, g, k, q, width)
        return t, t.permute(0, 1, 4, 2, 3, 5)

    @staticmethod
    def matrices(t: Tensor) -> Tensor:
        r"""
        A contiguous group-major ``(batch, n, G, Q, k, width)`` tensor, or states
        ``(batch, n, G, state, k, width)``, as matrices with ``k * width`` columns (a view).
        """
        return t.flatten(-2)

    def output(self, t: Tensor) -> Tensor:
        """A contiguous time-major tensor as ``(batch, length, heads, width)``, padding dropped."""
        merged = t.view(self.batch, self.count * self.size, self.heads, t.shape[-1])
        return merged[:, : self.length] if self.pad else merged

    def states(self, like: Tensor, width: int) -> Tensor:
        """A new ``(batch, n, G, state, k, width)`` tensor of per-chunk states."""
        return like.new_empty(self.batch, self.count, self.groups, self.B.shape[-1], self.per_group, width)

    def _carry(self) -> Tensor:
        """``carry`` as ``(batch, n, G, 1, k, 1)``, to scale the states."""
        return self.carry.view(self.batch, self.count, self.groups, 1, self.per_group, 1)

    # --- the map and its transpose ----------------------------------------------------------

    def forward(self, x: Tensor, skip: Tensor | None) -> tuple[Tensor, Tensor]:
        r"""
        ``y = M (delta x) + D x`` and the last state.

        Args:
            x (Tensor): ``(batch, length, heads, head_dim)``, any strides.
            skip (Tensor, optional): ``D`` as ``(heads, 1)`` or ``(heads, head_dim)``.

        Returns:
            *tuple* ``(y, last)``: ``y`` ``(batch, length, heads, head_dim)``, ``last``
            ``(batch, heads, head_dim, state)``.
        """
        width = x.shape[-1]
        x = self.time_major(x)
        # u = delta x in the head-major layout; v = exp(cs_{Q-1} - cs_j) delta_j x_j group-major
        u, u_time = self.empty(x, "head", width)
        torch.mul(x, self.factor(self.delta), out=u_time)
        v, v_time = self.empty(x, "group", width)
        torch.mul(x, self.factor(self.end_delta), out=v_time)
        inside = self.weights @ u  # each chunk's own inputs, per head
        del u
        # each chunk's contribution to the state at its end, sum_j B_j v_j^T, one product per group
        local = (self.B.transpose(-1, -2) @ self.matrices(v)).view_as(self.states(x, width))
        del v
        # the state entering chunk c: h_0 = 0, h_{c+1} = carry_c h_c + local_c (one step per chunk)
        carry = self._carry()
        entering = torch.empty_like(local)
        entering[:, 0].zero_()
        for c in range(1, self.count):
            torch.addcmul(local[:, c - 1], carry[:, c - 1], entering[:, c - 1], out=entering[:, c])
        last = torch.addcmul(local[:, -1], carry[:, -1], entering[:, -1])  # (batch, G, state, k, P)
        # the entering states' share of each output, exp(cs_i) <C_i, h_c>, plus the chunk's own
        entered = (self.C @ self.matrices(entering)).view(self.batch, self.count, self.groups, self.size, -1, width)
        y, y_time = self.empty(x, "time", width)
        torch.addcmul(
            inside.permute(0, 1, 4, 2, 3, 5),
            entered.permute(0, 1, 3, 2, 4, 5),
            self.factor(self.from_start),
            out=y_time,
        )
        if skip is not None:
            y.addcmul_(x, skip.view(self.groups, self.per_group, -1))
        state = last.permute(0, 1, 3, 4, 2).reshape(self.batch, self.heads, width, -1)
        return self.output(y), state

    def transposed(self, grad_y: Tensor, skip: Tensor | None) -> Tensor:
        r"""
        ``grad_x = delta M^T grad_y + D grad_y``: the forward's adjoint, run backwards over the chunks.

        Args:
            grad_y (Tensor): ``(batch, length, heads, head_dim)``, any strides.
            skip (Tensor, optional): ``D`` as in :meth:`forward`.

        Returns:
            *Tensor* ``(batch, length, heads, head_dim)``.
        """
        width = grad_y.shape[-1]
        grad_y = self.time_major(grad_y)
        g, g_time = self.empty(grad_y, "head", width)
        g_time.copy_(grad_y)
        scaled, scaled_time = self.empty(grad_y, "group", width)
        torch.mul(grad_y, self.factor(self.from_start), out=scaled_time)
        inside = self.weights.transpose(-1, -2) @ g  # each chunk's own outputs, per head
        del g
        # the gradient of the state entering chunk c through that chunk's outputs,
        # sum_i exp(cs_i) C_i grad_y_i^T
        direct = (self.C.transpose(-1, -2) @ self.matrices(scaled)).view_as(self.states(grad_y, width))
        del scaled
        # gradient of h_{c+1} (what chunk c's local state receives): g_n = 0 (the last state
        # carries no gradient), g_c = direct_{c+1} + carry_{c+1} g_{c+1}
        carry = self._carry()
        leaving = torch.empty_like(direct)
        leaving[:, -1].zero_()
        for c in range(self.count - 2, -1, -1):
            torch.addcmul(direct[:, c + 1], carry[:, c + 1], leaving[:, c + 1], out=leaving[:, c])
        # through local_c = sum_j exp(cs_{Q-1} - cs_j) delta_j B_j x_j^T
        left = (self.B @ self.matrices(leaving)).view(self.batch, self.count, self.groups, self.size, -1, width)
        grad_x, grad_time = self.empty(grad_y, "time", width)
        torch.mul(inside.permute(0, 1, 4, 2, 3, 5), self.factor(self.delta), out=grad_time)
        grad_x.addcmul_(left.permute(0, 1, 3, 2, 4, 5), self.factor(self.end_delta))
        if skip is not None:
            grad_x.addcmul_(grad_y, skip.view(self.groups, self.per_group, -1))
        return self.output(grad_x)


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
        skip = None if D is None else D.reshape(x.shape[2], -1)
        y, state = chunks.forward(x, skip)
        ctx.sizes = (chunks.length, chunks.groups)
        ctx.save_for_backward(skip, *chunks.tensors)
        ctx.mark_non_differentiable(state)
        return y, state

    @staticmethod
    def backward(ctx, grad_y: Tensor, _grad_state: Tensor):  # type: ignore[override]
        skip, *tensors = ctx.saved_tensors
        chunks = _Chunks(*ctx.sizes, tuple(tensors))
        return chunks.transposed(grad_y, skip), None, None, None, None, None, None


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
