"""The fused Mamba-1 node's scan backward: ``du`` by the forward scan on the reversed sequence.

:func:`~captum_mamba.kernels.fused_mixer.held_constant_scan_backward` takes mamba-ssm's kernel
module as an argument; here a step-by-step PyTorch recurrence with the kernel's ``fwd`` signature
stands in for it, so the reversal identity is checked on the CPU against autograd through the
recurrence with ``Δ``, ``B``, ``C`` held constant (the SSM rule). The GPU tests run the real kernel.
"""

from __future__ import annotations

import torch

from captum_mamba.kernels.fused_mixer import held_constant_scan_backward


class StepByStepScan:
    """``fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus)`` as mamba-ssm's kernel computes it, one step at a time."""

    @staticmethod
    def fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        assert z is None
        if delta_bias is not None:
            delta = delta + delta_bias[:, None]
        if delta_softplus:
            delta = torch.nn.functional.softplus(delta)
        batch, channels, length = u.shape
        state = torch.zeros(batch, channels, A.shape[1], dtype=u.dtype)
        outputs = []
        for t in range(length):
            decay = torch.exp(delta[:, :, t, None] * A)  # (batch, channels, state)
            state = decay * state + delta[:, :, t, None] * B[:, 0, None, :, t] * u[:, :, t, None]
            outputs.append((state * C[:, 0, None, :, t]).sum(-1))
        y = torch.stack(outputs, dim=-1)
        if D is not None:
            y = y + D[:, None] * u
        return y, state


def _inputs(seed: int, batch: int = 2, channels: int = 5, state: int = 3, length: int = 17):
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape, scale=1.0):
        return torch.randn(*shape, generator=generator, dtype=torch.float64) * scale

    u = draw(batch, channels, length)
    delta = draw(batch, channels, length, scale=2.0)
    dt_bias = draw(channels)
    A = -torch.rand(channels, state, generator=generator, dtype=torch.float64) * 3
    B, C = draw(batch, 1, state, length), draw(batch, 1, state, length)
    D = draw(channels)
    return u, delta, dt_bias, A, B, C, D


def test_reversed_forward_scan_gives_the_held_constant_input_gradient():
    for seed in range(3):
        u, delta, dt_bias, A, B, C, D = _inputs(seed)
        grad_y = torch.randn(u.shape, generator=torch.Generator().manual_seed(10 + seed), dtype=torch.float64)
        u = u.requires_grad_()
        y, _ = StepByStepScan.fwd(u, delta, A, B, C, D, None, dt_bias, True)  # Δ, A, B, C: no gradient
        (expected,) = torch.autograd.grad(y, u, grad_y)
        got = held_constant_scan_backward(StepByStepScan, grad_y, delta, dt_bias, A, B, C, D.float())
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_a_time_step_rounded_to_zero_stays_finite():
    u, delta, dt_bias, A, B, C, D = _inputs(4, length=9)
    delta[:, :, 3] = -200.0  # softplus(-200) is 0 in float32: the reversed scan must not divide by it
    grad_y = torch.ones_like(u)
    u = u.requires_grad_()
    y, _ = StepByStepScan.fwd(u, delta.float().double(), A, B, C, D, None, dt_bias, True)
    (expected,) = torch.autograd.grad(y, u, grad_y)
    got = held_constant_scan_backward(StepByStepScan, grad_y, delta, dt_bias, A, B, C, D.float())
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
