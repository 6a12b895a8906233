"""Two Triton kernels for the element-wise steps of the fused Mamba-1 node's backward pass.

Around the reversed scan (:func:`~captum_mamba.kernels.fused_mixer.held_constant_scan_backward`)
the node's backward forms, per channel and time step, the gate and SiLU rules' products, the
reversed scan's time steps and input, and the conv input's gradient; in PyTorch that is some
seventeen element-wise kernels of channel-sized tensors per layer (and two flips). Here it is two:

* :func:`prepare_reversed_scan`, over the reversed time ``s = L-1-t``: ``dz_t = σ(z_t) y_t h_t``
  (written in forward time), the shifted steps ``δ_s = Δ_{t+1}`` (1 at ``s = 0``) and the input
  ``x_s = silu(z_t) h_t / δ_s``, for ``h = 0.5 d gated`` (the gate rule's share);
* :func:`finish_conv_gradient`, over the forward time: ``du_t = Δ_t g'_{L-1-t} + D silu(z_t) h_t``
  from the reversed scan's output ``g'``, then the SiLU rule ``du_t σ(conv_t)``.

``Δ = softplus(delta + dt_bias)`` is formed in the kernels from ``delta`` in reversed time, with
the threshold 20 of the scan kernel and of ``torch.nn.functional.softplus``, and ``log1p`` written
out so that small steps keep their digits. The same values as the PyTorch steps in
``fused_mixer._direction_backward`` (``tests/test_fused_mixer_stand_ins.py`` compares them with
Triton's interpreter where Triton is installed). This module imports Triton: import it only
where the CUDA kernels run.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

_BLOCK = 1024


@triton.jit
def _step(pre_activation, smallest):
    """``max(softplus(x), smallest)``: the scan kernel's threshold 20 and an accurate ``log1p(exp(x))``."""
    u = tl.exp(pre_activation)
    w = 1.0 + u
    log1p = tl.where(w == 1.0, u, tl.log(w) * (u / (w - 1.0)))
    return tl.maximum(tl.where(pre_activation > 20.0, pre_activation, log1p), smallest)


@triton.jit
def _prepare_kernel(
    z_ptr, y_ptr, half_ptr, delta_ptr, bias_ptr, grad_z_ptr, shifted_ptr, input_ptr,
    channels, length, grad_z_batch_stride, smallest, BLOCK: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    s = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # reversed time
    inside = s < length
    base = row.to(tl.int64) * length
    t = length - 1 - s
    z = tl.load(z_ptr + base + t, mask=inside, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + base + t, mask=inside, other=0.0).to(tl.float32)
    half = tl.load(half_ptr + base + t, mask=inside, other=0.0).to(tl.float32)
    sigmoid = tl.sigmoid(z)
    # dz goes into a view of the node's [dx; dz] buffer: its batch stride is its own
    grad_z_row = (row // channels).to(tl.int64) * grad_z_batch_stride + (row % channels).to(tl.int64) * length
    tl.store(grad_z_ptr + grad_z_row + t, (sigmoid * y * half).to(grad_z_ptr.dtype.element_ty), mask=inside)
    bias = tl.load(bias_ptr + row % channels).to(tl.float32)
    previous = tl.load(delta_ptr + base + s - 1, mask=inside & (s > 0), other=0.0).to(tl.float32)
    shifted = tl.where(s > 0, _step(previous + bias, smallest), 1.0)  # δ_s = Δ_{t+1}; nothing carried at s = 0
    tl.store(shifted_ptr + base + s, shifted, mask=inside)
    tl.store(input_ptr + base + s, z * sigmoid * half / shifted, mask=inside)


@triton.jit
def _finish_kernel(
    carried_ptr, delta_ptr, bias_ptr, skip_ptr, z_ptr, half_ptr, conv_ptr, out_ptr,
    channels, length, smallest, BLOCK: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    t = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # forward time
    inside = t < length
    base = row.to(tl.int64) * length
    s = length - 1 - t
    channel = row % channels
    step = _step(
        tl.load(delta_ptr + base + s, mask=inside, other=0.0).to(tl.float32) + tl.load(bias_ptr + channel), smallest
    )
    carried = tl.load(carried_ptr + base + s, mask=inside, other=0.0)
    z = tl.load(z_ptr + base + t, mask=inside, other=0.0).to(tl.float32)
    half = tl.load(half_ptr + base + t, mask=inside, other=0.0).to(tl.float32)
    grad_u = step * carried + tl.load(skip_ptr + channel) * (z * tl.sigmoid(z) * half)
    conv = tl.load(conv_ptr + base + t, mask=inside, other=0.0).to(tl.float32)
    tl.store(out_ptr + base + t, (grad_u * tl.sigmoid(conv)).to(out_ptr.dtype.element_ty), mask=inside)


def _contiguous_like(tensor: Tensor, like: Tensor) -> Tensor:
    """``tensor`` contiguous (the kernels index ``(batch, channels, length)`` rows), shaped like ``like``."""
    if tensor.shape != like.shape:
        raise ValueError(f"expected a tensor of shape {tuple(like.shape)}, got {tuple(tensor.shape)}")
    return tensor.contiguous()


def _grid(like: Tensor) -> tuple[int, int]:
    return like.shape[0] * like.shape[1], triton.cdiv(like.shape[2], _BLOCK)


def prepare_reversed_scan(
    z: Tensor, y: Tensor, half: Tensor, reversed_delta: Tensor, dt_bias: Tensor, grad_z: Tensor, smallest: float
) -> tuple[Tensor, Tensor]:
    r"""
    Write the SiLU rule's ``dz = σ(z) · y · half`` into ``grad_z`` and form the reversed scan's
    time steps and input.

    Args:
        z, y, half (Tensor): ``(batch, channels, length)``, contiguous: the gate's pre-activation,
                    the scan output, the gate rule's share ``0.5 d gated``.
        reversed_delta (Tensor): ``(batch, channels, length)``, Δ before bias and softplus, in reversed time.
        dt_bias (Tensor): ``(channels,)``, float32.
        grad_z (Tensor): ``(batch, channels, length)``, written; rows contiguous, any batch stride
                    (a view of the node's ``[dx; dz]`` buffer).
        smallest (float): the smallest time step (a softplus rounded to 0 is replaced).

    Returns:
        *tuple* ``(shifted, reversed_input)``, float32, in reversed time.
    """
    z, y, half, reversed_delta = (_contiguous_like(t, z) for t in (z, y, half, reversed_delta))
    if grad_z.shape != z.shape or grad_z.stride()[1:] != (z.shape[2], 1):
        raise ValueError("grad_z must be (batch, channels, length) with contiguous (channels, length) rows")
    shifted = torch.empty(z.shape, device=z.device, dtype=torch.float32)
    reversed_input = torch.empty_like(shifted)
    _prepare_kernel[_grid(z)](
        z, y, half, reversed_delta, dt_bias, grad_z, shifted, reversed_input, z.shape[1], z.shape[2],
        grad_z.stride(0), smallest, BLOCK=_BLOCK,
    )  # fmt: skip
    return shifted, reversed_input


def finish_conv_gradient(
    carried: Tensor,
    reversed_delta: Tensor,
    dt_bias: Tensor,
    D: Tensor,
    z: Tensor,
    half: Tensor,
    conv: Tensor,
    smallest: float,
) -> Tensor:
    r"""
    The conv output's gradient ``(Δ_t g'_{L-1-t} + D silu(z_t) half_t) · σ(conv_t)``.

    Args:
        carried (Tensor): the reversed scan's output ``(batch, channels, length)``, float32, reversed time.
        reversed_delta (Tensor): Δ before bias and softplus, in reversed time.
        dt_bias, D (Tensor): ``(channels,)``, float32.
        z, half, conv (Tensor): ``(batch, channels, length)`` in forward time.
        smallest (float): as in :func:`prepare_reversed_scan`.

    Returns:
        *Tensor* in ``conv``'s dtype, forward time.
    """
    carried, reversed_delta, z, half, conv = (_contiguous_like(t, z) for t in (carried, reversed_delta, z, half, conv))
    out = torch.empty_like(conv)
    _finish_kernel[_grid(z)](
        carried, reversed_delta, dt_bias, D, z, half, conv, out, z.shape[1], z.shape[2], smallest, BLOCK=_BLOCK
    )
    return out
