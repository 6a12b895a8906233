r"""The mixers' depthwise causal convolution in time-major layout, in pure PyTorch.

A Mamba mixer convolves each channel of ``x`` ``(batch, length, channels)`` over time with its
own kernel of ``K`` taps (``nn.Conv1d(groups=channels, padding=K - 1)``, the first ``length``
outputs kept)::

    out[t] = bias + sum_{s=0}^{K-1} w[K-1-s] * x[t - s]      (x[t] = 0 for t < 0)

``nn.Conv1d`` needs ``(batch, channels, length)``: the mixer transposes in and out, and what
follows (the SiLU, the scan) then works on a channel-first view, which the backward pass meets
again with time-major gradients. Written as ``K`` shifted multiply-adds in the mixer's own
layout, forward and backward (the same ``K`` shifts, reversed) read and write contiguous rows.
A linear map of ``x`` with constant weights: relevance passes as the gradient says (LRP-0).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class _CausalDepthwiseConv(torch.autograd.Function):
    """``x -> causal depthwise conv(x)`` with the kernel constant; the backward is the transposed conv, to ``x`` only."""

    @staticmethod
    def forward(ctx, x: Tensor, taps: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        # taps[k] = w[:, k] as contiguous rows (K, channels); tap K-1 multiplies x[t] itself
        batch, length, channels = x.shape
        size = taps.shape[0]
        out = x.new_empty(batch, length, channels)
        if bias is None:
            torch.mul(x, taps[-1], out=out)
        else:
            torch.addcmul(bias, x, taps[-1], out=out)
        for shift in range(1, min(size, length)):  # out[t] += w[K-1-shift] x[t - shift]
            out[:, shift:].addcmul_(x[:, :-shift], taps[size - 1 - shift])
        ctx.save_for_backward(taps)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (taps,) = ctx.saved_tensors
        size, length = taps.shape[0], grad.shape[1]
        grad_x = grad * taps[-1]
        for shift in range(1, min(size, length)):  # x[t] reached out[t + shift] through w[K-1-shift]
            grad_x[:, :-shift].addcmul_(grad[:, shift:], taps[size - 1 - shift])
        return grad_x, None, None


def time_major_conv_applies(conv: nn.Module, x: Tensor) -> bool:
    r"""
    Whether :func:`time_major_causal_conv` computes exactly ``conv`` on ``x``: an ``nn.Conv1d``
    with its own forward (no rule replaced it) and no hooks, depthwise, causal (padding ``K - 1``,
    stride and dilation 1, zero padding), constant weights (no gradient asked for them) and a
    float32 or float64 input of the weights' dtype. Everything else takes the module.

    Args:
        conv (nn.Module): the mixer's ``conv1d``.
        x (Tensor): its input, ``(batch, length, channels)``.

    Returns:
        *bool*
    """
    if type(conv) is not nn.Conv1d or "forward" in conv.__dict__:
        return False
    if conv._forward_hooks or conv._forward_pre_hooks or conv._backward_hooks or conv._backward_pre_hooks:
        return False
    hooks = nn.modules.module
    if (
        hooks._global_forward_hooks
        or hooks._global_forward_pre_hooks
        or hooks._global_backward_hooks
        or hooks._global_backward_pre_hooks
    ):
        return False
    size = conv.kernel_size[0]
    channels = x.shape[-1]
    bias = conv.bias
    return (
        x.dim() == 3
        and x.dtype in (torch.float32, torch.float64)
        and x.dtype == conv.weight.dtype
        and conv.in_channels == conv.out_channels == conv.groups == channels
        and conv.stride == (1,)
        and conv.dilation == (1,)
        and conv.padding == (size - 1,)
        and conv.padding_mode == "zeros"
        and not conv.weight.requires_grad
        and (bias is None or not bias.requires_grad)
    )


def time_major_causal_conv(conv: nn.Conv1d, x: Tensor) -> Tensor:
    r"""
    ``conv`` (a depthwise causal ``nn.Conv1d``, see :func:`time_major_conv_applies`) on ``x`` in
    the time-major layout, without transposes.

    Args:
        conv (nn.Conv1d): the mixer's convolution.
        x (Tensor): ``(batch, length, channels)``, any strides.

    Returns:
        *Tensor* ``(batch, length, channels)``, contiguous, before the activation; its backward
        reaches ``x`` only (the weights are constants).
    """
    taps = conv.weight.detach()[:, 0, :].t().contiguous()
    bias = None if conv.bias is None else conv.bias.detach()
    return _CausalDepthwiseConv.apply(x, taps, bias)
