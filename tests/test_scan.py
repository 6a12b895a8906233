"""The linear-time scans against autograd and finite differences."""

from __future__ import annotations

import pytest
import torch

from captum_mamba.kernels.selective_scan import differentiable_selective_scan, linear_selective_scan


def _problem(batch=2, length=37, channels=5, state=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, length, channels, generator=g, dtype=dtype),
        torch.rand(batch, length, channels, generator=g, dtype=dtype) * 0.6,
        -torch.rand(channels, state, generator=g, dtype=dtype) * 4,
        torch.randn(batch, length, state, generator=g, dtype=dtype),
        torch.randn(batch, length, state, generator=g, dtype=dtype),
    )


@pytest.mark.parametrize("chunk", [1, 5, 37, 128])
def test_linear_scan_matches_autograd_scan(chunk):
    u, delta, A, B, C = _problem()
    u1, u2 = u.clone().requires_grad_(), u.clone().requires_grad_()
    y1, last1 = linear_selective_scan(u1, delta, A, B, C, chunk=chunk, return_last_state=True)
    y2, last2 = differentiable_selective_scan(u2, delta, A, B, C, chunk=7, return_last_state=True)
    torch.testing.assert_close(y1, y2, atol=1e-12, rtol=0)
    torch.testing.assert_close(last1, last2, atol=1e-12, rtol=0)
    upstream = torch.randn_like(y1)
    (g1,) = torch.autograd.grad(y1, u1, upstream)
    (g2,) = torch.autograd.grad(y2, u2, upstream)
    torch.testing.assert_close(g1, g2, atol=1e-12, rtol=0)


def test_linear_scan_gradcheck():
    u, delta, A, B, C = _problem(length=9)
    assert torch.autograd.gradcheck(lambda x: linear_selective_scan(x, delta, A, B, C, chunk=4), (u.requires_grad_(),))


def test_half_precision_inputs_are_scanned_in_float32():
    u, delta, A, B, C = _problem(dtype=torch.float32)
    y = linear_selective_scan(u.bfloat16(), delta.bfloat16(), A, B.bfloat16(), C.bfloat16())
    assert y.dtype == torch.float32
    reference = linear_selective_scan(u, delta, A, B, C)
    assert (y - reference).abs().max() < 0.05 * reference.abs().max()


@pytest.mark.parametrize("scale", [0.6, 20.0])
def test_segmented_chunks_of_a_long_sequence_match_the_step_by_step_recurrence(scale):
    # 600 steps: chunks of 256, 256 and 88 (segments of 16, 16 and 8, the last one padded to 96);
    # scale 20 makes many decays underflow to 0, which the segment totals must survive
    u, delta, A, B, C = _problem(batch=1, length=600, channels=4, state=3, seed=3)
    delta = delta * scale
    u1, u2 = u.clone().requires_grad_(), u.clone().requires_grad_()
    y1, last1 = linear_selective_scan(u1, delta, A, B, C, return_last_state=True)
    y2, last2 = differentiable_selective_scan(u2, delta, A, B, C, chunk=600, return_last_state=True)
    torch.testing.assert_close(y1, y2, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(last1, last2, atol=1e-10, rtol=1e-10)
    upstream = torch.randn_like(y1)
    (g1,) = torch.autograd.grad(y1, u1, upstream)
    (g2,) = torch.autograd.grad(y2, u2, upstream)
    torch.testing.assert_close(g1, g2, atol=1e-10, rtol=1e-10)
    assert torch.isfinite(g1).all()
