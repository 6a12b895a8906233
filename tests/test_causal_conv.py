"""The time-major depthwise causal convolution against ``nn.Conv1d``, and when the mixers use it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from captum_mamba.kernels.causal_conv import time_major_causal_conv, time_major_conv_applies


def _conv(channels: int, size: int, bias: bool, dtype=torch.float64) -> nn.Conv1d:
    torch.manual_seed(size)
    conv = nn.Conv1d(channels, channels, size, groups=channels, padding=size - 1, bias=bias).to(dtype)
    return conv.requires_grad_(False)


@pytest.mark.parametrize("size", [1, 2, 4])
@pytest.mark.parametrize("length", [1, 3, 17])
@pytest.mark.parametrize("bias", [True, False])
def test_equals_the_module_forward_and_backward(size, length, bias):
    conv = _conv(6, size, bias)
    wide = torch.randn(2, length, 10, dtype=torch.float64)
    x = wide[..., 2:8]  # a slice of a projection, as the mixers pass it
    fast, slow = x.clone().requires_grad_(), x.clone().requires_grad_()
    assert time_major_conv_applies(conv, fast)
    y1 = time_major_causal_conv(conv, fast)
    y2 = conv(slow.transpose(1, 2))[..., :length].transpose(1, 2)
    torch.testing.assert_close(y1, y2, atol=1e-13, rtol=0)
    assert y1.is_contiguous()
    upstream = torch.randn_like(y1)
    (g1,) = torch.autograd.grad(y1, fast, upstream)
    (g2,) = torch.autograd.grad(y2, slow, upstream)
    torch.testing.assert_close(g1, g2, atol=1e-13, rtol=0)
    assert torch.autograd.gradcheck(lambda u: time_major_causal_conv(conv, u), (x[:1].clone().requires_grad_(),))


def test_float32_equals_the_module_to_rounding():
    conv = _conv(5, 4, True, torch.float32)
    x = torch.randn(1, 50, 5)
    expected = conv(x.transpose(1, 2))[..., :50].transpose(1, 2)
    torch.testing.assert_close(time_major_causal_conv(conv, x), expected, atol=1e-6, rtol=1e-6)


def test_the_module_runs_where_it_must():
    conv = _conv(4, 4, True)
    x = torch.randn(1, 9, 4, dtype=torch.float64)
    assert time_major_conv_applies(conv, x)
    assert not time_major_conv_applies(conv, x.float())  # dtype differs from the weights
    assert not time_major_conv_applies(conv, x.bfloat16())
    assert not time_major_conv_applies(conv, x[..., :3])  # not this conv's channels
    handle = conv.register_forward_hook(lambda *args: None)  # a hook (Captum's layer methods) sees the module
    assert not time_major_conv_applies(conv, x)
    handle.remove()
    conv.forward = conv.forward  # a rule that replaced the forward
    assert not time_major_conv_applies(conv, x)
    del conv.forward
    conv.weight.requires_grad_(True)  # weight gradients asked for
    assert not time_major_conv_applies(conv, x)
    conv.weight.requires_grad_(False)
    assert time_major_conv_applies(conv, x)
    padded = nn.Conv1d(4, 4, 4, groups=4, padding=1).double().requires_grad_(False)  # not causal
    assert not time_major_conv_applies(padded, x)
    dense = nn.Conv1d(4, 4, 4, padding=3).double().requires_grad_(False)  # not depthwise
    assert not time_major_conv_applies(dense, x)
