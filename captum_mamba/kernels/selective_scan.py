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
  linear in the length and no ``(batch, length, channels, state)`` tensor is ever built.
* :func:`differentiable_selective_scan`: the same recurrence recorded by autograd, with
  gradients to every input. It is what plain Gradient x Input sees and is used when the
  SSM rule is switched off (ablations, negative controls).
"""

from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_CHUNK = 128


def _chunk_bounds(length: int, chunk: int) -> list[tuple[int, int]]:
    return [(start, min(start + chunk, length)) for start in range(0, length, chunk)]


def _scan_forward(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
    batch, length, channels = u.shape
    state = A.shape[-1]
    y = u.new_empty(batch, length, channels)
    h = u.new_zeros(batch, channels, state)
    for start, stop in _chunk_bounds(length, chunk):
        d = delta[:, start:stop]
        decay = torch.exp(d.unsqueeze(-1) * A)  # (b, t, d, n)
        drive = (d * u[:, start:stop]).unsqueeze(-1) * B[:, start:stop].unsqueeze(2)
        states = torch.empty_like(drive)
        for drive_t, decay_t, state_t in zip(drive.unbind(1), decay.unbind(1), states.unbind(1)):
            h = torch.addcmul(drive_t, decay_t, h, out=state_t)
        y[:, start:stop] = torch.einsum("btdn,btn->btd", states, C[:, start:stop])
    return y, h


def _scan_adjoint(grad_y: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk: int) -> Tensor:
    """Reverse-time scan: lam_t = exp(delta_{t+1} A) lam_{t+1} + C_t g_t; du_t = delta_t <B_t, lam_t>."""
    batch, length, channels = grad_y.shape
    state = A.shape[-1]
    grad_u = grad_y.new_empty(batch, length, channels)
    lam = grad_y.new_zeros(batch, channels, state)
    next_decay = grad_y.new_zeros(batch, channels, state)
    for start, stop in reversed(_chunk_bounds(length, chunk)):
        decay = torch.exp(delta[:, start:stop].unsqueeze(-1) * A)
        source = grad_y[:, start:stop].unsqueeze(-1) * C[:, start:stop].unsqueeze(2)
        adjoints = torch.empty_like(source)
        steps = zip(source.unbind(1), decay.unbind(1), adjoints.unbind(1))
        for source_t, decay_t, adjoint_t in reversed(list(steps)):
            lam = torch.addcmul(source_t, next_decay, lam, out=adjoint_t)
            next_decay = decay_t
        grad_u[:, start:stop] = delta[:, start:stop] * torch.einsum("btdn,btn->btd", adjoints, B[:, start:stop])
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
                    Default: 128
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
        for t in range(stop - start):
            h = decay[:, t] * h + drive[:, t]
            states.append(h)
        outputs.append(torch.einsum("btdn,btn->btd", torch.stack(states, 1), C[:, start:stop]))
    y = torch.cat(outputs, dim=1)
    return (y, h.detach()) if return_last_state else y
