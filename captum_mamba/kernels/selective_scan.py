"""Linear-time selective scans in pure PyTorch.

Layout convention (time-major inside a batch, as ``nn.Linear`` produces it):

* ``u``, ``delta``: ``(batch, length, channels)``
* ``A``: ``(channels, state)``
* ``B``, ``C``: ``(batch, length, state)``

The recurrence of Mamba-1 (Hugging Face's Euler-discretised B, as in the CUDA kernel)::

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t      (h_0 = 0)
    y_t = <C_t, h_t>

Two implementations are offered:

* :func:`linear_selective_scan`: the MambaLRP scan. ``delta``, ``A``, ``B`` and ``C`` are
  constants, so ``u -> y`` is linear and its backward is the adjoint (reverse-time) scan.
  Both passes run without an autograd graph in time chunks, so time and memory are
  linear in the length and no ``(batch, length, channels, state)`` tensor is ever built; inside
  a chunk of n steps a segmented scan needs only ~3 sqrt(n) sequential steps (see
  :func:`_segmented_scan`), since per-step dispatch, not arithmetic, bounds a CPU scan.
* :func:`differentiable_selective_scan`: the same recurrence recorded by autograd, with
  gradients to every input. It is what plain Gradient x Input sees and is used when the
  SSM rule is switched off (ablations, negative controls).
"""

from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_CHUNK = 256


def _chunk_bounds(length: int, chunk: int) -> list[tuple[int, int]]:
    return [(start, min(start + chunk, length)) for start in range(0, length, chunk)]


def _segment_length(steps: int) -> int:
    """A power of two near sqrt(steps): ~3 sqrt(steps) sequential steps, no padding for even chunks."""
    return 1 << max(0, (max(steps, 1).bit_length() - 1) // 2)


class _Workspace:
    """Buffers reused by every chunk of one scan: each page is touched once, not once per chunk."""

    def __init__(self, like: Tensor, channels: int, size: int, chunk: int) -> None:
        padded = -(-chunk // _segment_length(chunk)) * _segment_length(chunk)
        self.states = like.new_empty(like.shape[0], padded, channels, size)
        self.decay = torch.empty_like(self.states)

    def padded(self, steps: int) -> tuple[Tensor, Tensor]:
        """Views ``(batch, padded, channels, state)`` for a chunk of ``steps`` steps, padding zeroed."""
        segment = _segment_length(steps)
        padded = -(-steps // segment) * segment
        states, decay = self.states[:, :padded], self.decay[:, :padded]
        states[:, steps:].zero_()
        return states, decay


def _segmented_scan(rates: Tensor, A: Tensor, states: Tensor, decay: Tensor, h0: Tensor, reverse: bool) -> Tensor:
    r"""
    ``h_t = exp(rates_t A) h_prev + s_t`` over one chunk in ~3 sqrt(n) sequential steps, in place.

    ``states`` ``(batch, n', channels, state)`` holds the sources ``s_t`` on entry and the states
    ``h_t`` on exit, ``n'`` being ``n`` rounded up to whole segments (the extra sources zero:
    identity steps at the end, harmless in either direction); ``decay`` is a buffer of the same
    shape. ``h_prev`` is ``h_{t-1}`` (``h0`` before the first step), or ``h_{t+1}`` (``h0`` after
    the last step) when ``reverse``. ``rates`` is ``(batch, n, channels)``, ``A``
    ``(channels, state)``, ``rates_t A <= 0``. Returns the state after the last step processed.

    The steps are cut into K segments of T, all K scanned together: a first pass from zero
    (T steps, keeping only each segment's final state) gives, with the segment totals
    ``exp(A sum rates)``, the true state entering every segment (K steps); a second pass from
    those states (T steps) writes the states. A CPU scan is bound by its per-step dispatch,
    not its arithmetic, so ~3 sqrt(n) steps over K-times larger tensors beat n small ones.
    """
    batch, padded, channels, size = states.shape
    segment = _segment_length(rates.shape[1])
    count = padded // segment
    if padded != rates.shape[1]:
        rates = torch.cat([rates, rates.new_zeros(batch, padded - rates.shape[1], channels)], 1)
    local = states.view(batch, count, segment, channels, size)
    seg_rates = rates.reshape(batch, count, segment, channels)
    decay = decay.view(batch, count, segment, channels, size)
    torch.mul(seg_rates.unsqueeze(-1), A, out=decay).exp_()
    order = list(range(segment - 1, -1, -1) if reverse else range(segment))
    final = local[:, :, order[0]]
    for t in order[1:]:  # each segment from zero; only its final state is kept
        final = torch.addcmul(local[:, :, t], decay[:, :, t], final)
    totals = torch.exp(seg_rates.sum(2).unsqueeze(-1) * A)  # (batch, count, channels, state)
    entering = torch.empty_like(totals)
    h = h0
    for k in range(count - 1, -1, -1) if reverse else range(count):
        entering[:, k] = h
        h = torch.addcmul(final[:, k], totals[:, k], h)
    previous = entering
    for t in order:  # each segment again, from its true entering state
        previous = torch.addcmul(local[:, :, t], decay[:, :, t], previous, out=local[:, :, t])
    return h


def _contract(states: Tensor, vectors: Tensor) -> Tensor:
    """``out[b, t, d] = sum_n states[b, t, d, n] vectors[b, t, n]`` as one batched matrix product."""
    batch, steps, channels, size = states.shape
    flat = states.reshape(batch * steps, channels, size)
    return torch.bmm(flat, vectors.reshape(batch * steps, size, 1)).view(batch, steps, channels)


def _scan_forward(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
    batch, length, channels = u.shape
    y = u.new_empty(batch, length, channels)
    h = u.new_zeros(batch, channels, A.shape[-1])
    workspace = _Workspace(u, channels, A.shape[-1], min(chunk, length))
    for start, stop in _chunk_bounds(length, chunk):
        d = delta[:, start:stop]
        states, decay = workspace.padded(stop - start)
        torch.mul((d * u[:, start:stop]).unsqueeze(-1), B[:, start:stop].unsqueeze(2), out=states[:, : stop - start])
        h = _segmented_scan(d, A, states, decay, h, reverse=False)
        y[:, start:stop] = _contract(states[:, : stop - start], C[:, start:stop])
    return y, h


def _scan_adjoint(grad_y: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk: int) -> Tensor:
    """Reverse-time scan: lam_t = exp(delta_{t+1} A) lam_{t+1} + C_t g_t; du_t = delta_t <B_t, lam_t>."""
    batch, length, channels = grad_y.shape
    grad_u = grad_y.new_empty(batch, length, channels)
    lam = grad_y.new_zeros(batch, channels, A.shape[-1])
    next_delta = torch.cat([delta[:, 1:], delta.new_zeros(batch, 1, channels)], 1)  # lam_L = 0
    workspace = _Workspace(grad_y, channels, A.shape[-1], min(chunk, length))
    for start, stop in reversed(_chunk_bounds(length, chunk)):
        adjoints, decay = workspace.padded(stop - start)
        torch.mul(grad_y[:, start:stop].unsqueeze(-1), C[:, start:stop].unsqueeze(2), out=adjoints[:, : stop - start])
        lam = _segmented_scan(next_delta[:, start:stop], A, adjoints, decay, lam, reverse=True)
        grad_u[:, start:stop] = delta[:, start:stop] * _contract(adjoints[:, : stop - start], B[:, start:stop])
    return grad_u


class _LinearSelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk: int
    ) -> tuple[Tensor, Tensor]:
        y, last_state = _scan_forward(u, delta, A, B, C, chunk)
        ctx.save_for_backward(delta, A, B, C)
        ctx.chunk = chunk
        ctx.mark_non_differentiable(last_state)
        return y, last_state

    @staticmethod
    def backward(ctx, grad_y: Tensor, _grad_state: Tensor):  # type: ignore[override]
        delta, A, B, C = ctx.saved_tensors
        grad_u = _scan_adjoint(grad_y.contiguous(), delta, A, B, C, ctx.chunk)
        return grad_u, None, None, None, None, None


def _promote(u: Tensor, *others: Tensor) -> tuple[Tensor, ...]:
    dtype = torch.promote_types(u.dtype, torch.float32)
    return tuple(t.to(dtype).contiguous() for t in (u, *others))


def linear_selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk: int = DEFAULT_CHUNK,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""
    Selective scan with ``delta``, ``A``, ``B``, ``C`` held constant: gradients flow to ``u`` only.

    Computes in ``float32`` or wider (``bf16``/``fp16`` inputs are upcast, like the CUDA kernel).

    Args:
        u (Tensor): scan input, ``(batch, length, channels)``.
        delta (Tensor): positive step sizes (after bias and softplus), same shape as ``u``.
        A (Tensor): continuous-time state matrix (negative), ``(channels, state)``.
        B (Tensor): input matrices, ``(batch, length, state)``.
        C (Tensor): output matrices, ``(batch, length, state)``.
        chunk (int, optional): time steps whose decays are materialised at once.
                    Default: 256
        return_last_state (bool, optional): also return ``h_L`` (no gradient).
                    Default: False

    Returns:
        *Tensor* ``y`` of shape ``(batch, length, channels)`` in the promoted dtype, and the last
        state ``(batch, channels, state)`` if ``return_last_state``.
    """
    u, delta, A, B, C = _promote(u, delta.detach(), A.detach(), B.detach(), C.detach())
    y, last_state = _LinearSelectiveScan.apply(u, delta, A, B, C, chunk)
    return (y, last_state) if return_last_state else y


def differentiable_selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk: int = DEFAULT_CHUNK,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""
    The same recurrence as :func:`linear_selective_scan`, recorded by autograd with gradients
    to every argument (what plain Gradient x Input differentiates). Linear in time, but it keeps
    every state alive for the backward pass.

    Args and Returns: as :func:`linear_selective_scan`.
    """
    u, delta, A, B, C = _promote(u, delta, A, B, C)
    batch, length, channels = u.shape
    h = u.new_zeros(batch, channels, A.shape[-1])
    outputs = []
    for start, stop in _chunk_bounds(length, chunk):
        d = delta[:, start:stop]
        decay = torch.exp(d.unsqueeze(-1) * A)
        drive = (d * u[:, start:stop]).unsqueeze(-1) * B[:, start:stop].unsqueeze(2)
        states = []
        # unbind, not decay[:, t]: the backward of a per-step index would fill a zero tensor of the
        # whole chunk for every step (quadratic); unbind's backward stacks the step gradients once
        for step_decay, step_drive in zip(decay.unbind(1), drive.unbind(1)):
            h = step_decay * h + step_drive
            states.append(h)
        outputs.append(torch.einsum("btdn,btn->btd", torch.stack(states, 1), C[:, start:stop]))
    y = torch.cat(outputs, dim=1)
    return (y, h.detach()) if return_last_state else y
