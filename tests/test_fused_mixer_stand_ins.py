"""The fused Mamba-1 node (:mod:`captum_mamba.kernels.fused_mixer`) on the CPU, its kernels replaced by stand-ins.

The node calls mamba-ssm's and causal-conv1d's raw entry points (``load_raw_kernels``). Here a
step-by-step PyTorch recurrence with the scan kernel's ``fwd`` signature and a depthwise
``conv1d`` with the convolution kernels' signatures stand in for them, so that

* the scan backward's reversal identity (:func:`held_constant_scan_backward`) is checked against
  autograd through the recurrence with ``Δ``, ``B``, ``C`` held constant (the SSM rule);
* the whole node (in and out projections, the gradient buffers, the conv recomputation, the
  SiLU, gate and SSM rules, FalconMamba's selection norms, Vision Mamba's two directions) is
  checked against the rule-by-rule PyTorch path in float64: same logits, same relevances.

The GPU tests run the real kernels.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from test_vim import images_of, tiny_vim

from captum_mamba import MambaLRP
from captum_mamba.kernels import fused_mixer
from captum_mamba.kernels.fused_mixer import held_constant_scan_backward
from captum_mamba.rules.mixer import MixerRule

from conftest import embeddings_of, tiny_lm


class StepByStepScan:
    """``fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus)`` as mamba-ssm's kernel computes it, one step at a time."""

    @staticmethod
    def fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
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
        if z is None:
            return y, state
        return y, state, y * F.silu(z)  # the kernel's out_z: the gated output


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
        got = held_constant_scan_backward(
            StepByStepScan, grad_y.float().flip(-1), delta.flip(-1), dt_bias, A, B, C, D.float()
        ).flip(-1)  # in reversed time, in and out
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_a_time_step_rounded_to_zero_stays_finite():
    u, delta, dt_bias, A, B, C, D = _inputs(4, length=9)
    delta[:, :, 3] = -200.0  # softplus(-200) is 0 in float32: the reversed scan must not divide by it
    grad_y = torch.ones_like(u)
    u = u.requires_grad_()
    y, _ = StepByStepScan.fwd(u, delta.float().double(), A, B, C, D, None, dt_bias, True)
    (expected,) = torch.autograd.grad(y, u, grad_y)
    got = held_constant_scan_backward(
        StepByStepScan, grad_y.float().flip(-1), delta.flip(-1), dt_bias, A, B, C, D.float()
    ).flip(-1)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


# --- the whole node against the rule-by-rule path ------------------------------------------------


def _conv_forward(x, weight, bias, seq_idx, initial_states, final_states_out, silu):
    """causal-conv1d's ``causal_conv1d_fwd`` signature: depthwise causal conv of ``(batch, channels, length)``."""
    out = F.conv1d(x, weight.unsqueeze(1), bias, padding=weight.shape[1] - 1, groups=x.shape[1])[..., : x.shape[-1]]
    return F.silu(out) if silu else out


def _conv_backward(x, weight, bias, dout, seq_idx, initial_states, dfinal_states, dx, return_dinitial, silu):
    """causal-conv1d's ``causal_conv1d_bwd`` signature: writes the input gradient into ``dx``."""
    assert not silu
    with torch.enable_grad():
        leaf = x.detach().requires_grad_()
        (grad,) = torch.autograd.grad(_conv_forward(leaf, weight, bias, None, None, None, False), leaf, dout)
    dx.copy_(grad)
    return dx, None, None, None


def use_stand_in_kernels(monkeypatch: pytest.MonkeyPatch, elementwise: str = "torch") -> SimpleNamespace:
    r"""
    From now on the fused node runs on the CPU: stand-in kernels, the rule choosing it for every
    mixer without mask; with ``elementwise="triton"`` its element-wise steps run as the Triton
    kernels of ``fused_mixer_triton`` (on Triton's interpreter: see :data:`ELEMENTWISE`).
    """
    if elementwise == "triton":
        monkeypatch.setattr(fused_mixer, "use_triton_elementwise", lambda x: True)
    stand_ins = (StepByStepScan, _conv_forward, _conv_backward)
    monkeypatch.setattr(fused_mixer, "load_raw_kernels", lambda: stand_ins)
    used = SimpleNamespace(calls=0)
    original = MixerRule.fused

    def fused(self, mixer, call, layout):
        result = original(self, mixer, call, layout)
        used.calls += result is not None
        return result

    monkeypatch.setattr(MixerRule, "_fuses", lambda self, mixer, call, layout: call.attention_mask is None)
    monkeypatch.setattr(MixerRule, "fused", fused)
    return used


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


#: The element-wise steps under test: PyTorch's; Triton's kernels when this file runs again on Triton's
#: interpreter (:func:`test_the_triton_kernels_on_tritons_interpreter`; ``TRITON_INTERPRET`` must be set
#: before Triton is first imported, so that run is a process of its own).
ELEMENTWISE = [os.environ.get("CAPTUM_MAMBA_TEST_ELEMENTWISE", "torch")]
ON_THE_INTERPRETER = ELEMENTWISE == ["triton"]


@pytest.mark.parametrize("elementwise", ELEMENTWISE)
@pytest.mark.parametrize("family", ["mamba", "falcon_mamba"])
def test_fused_node_equals_the_rule_by_rule_path(family, elementwise, monkeypatch):
    model = tiny_lm(seed=3, family=family)
    embeds = embeddings_of(model, torch.randint(0, 32, (2, 11), generator=torch.Generator().manual_seed(3)))
    expected, expected_delta = MambaLRP(model).attribute(embeds, target=5, return_convergence_delta=True)
    used = use_stand_in_kernels(monkeypatch, elementwise)
    got, delta = MambaLRP(model).attribute(embeds, target=5, return_convergence_delta=True)
    assert used.calls == len(model.backbone.layers)  # every mixer went through the fused node
    error = _relative(got, expected)
    print(f"{family}, {elementwise} element-wise steps: fused node vs rule-by-rule, max |dR| / max |R| = {error:.1e}")
    assert 0 < error < 1e-5  # not 0: the node forms A, D, the steps and the reversed scan in float32
    torch.testing.assert_close(delta, expected_delta, atol=1e-5 * float(expected.abs().sum()), rtol=0)


@pytest.mark.parametrize("elementwise", ELEMENTWISE)
def test_fused_bidirectional_node_equals_the_rule_by_rule_path(elementwise, monkeypatch):
    model = tiny_vim(seed=2)
    images = images_of(2, seed=2)
    expected = MambaLRP(model).attribute(images, target=1)
    used = use_stand_in_kernels(monkeypatch, elementwise)
    got = MambaLRP(model).attribute(images, target=1)
    assert used.calls == len(model.layers)
    error = _relative(got, expected)
    print(f"Vision Mamba: fused bidirectional node vs rule-by-rule, max |dR| / max |R| = {error:.1e}")
    assert 0 < error < 1e-5


# The two runs of this file collect different tests (instead of skipping): in CI a skip fails.
if not ON_THE_INTERPRETER:

    def test_the_triton_kernels_on_tritons_interpreter():
        """This file again, its fused-node tests with the Triton element-wise kernels on Triton's interpreter (CPU)."""
        if importlib.util.find_spec("triton") is None:
            pytest.skip(
                "Triton is not installed (it comes with mamba-ssm on the GPU machine; scripts/bootstrap.sh "
                "installs it for Triton's interpreter)"
            )
        env = {**os.environ, "TRITON_INTERPRET": "1", "CAPTUM_MAMBA_TEST_ELEMENTWISE": "triton"}
        command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", __file__]
        run = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[1]
        )
        print(run.stdout[-2000:])
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        assert "triton element-wise steps" in run.stdout and " passed" in run.stdout

else:

    def test_triton_steps_keep_a_step_rounded_to_zero_finite():
        """A time step whose softplus is 0 in float32 (Δ's pre-activation -200) in the Triton kernels."""
        from captum_mamba.kernels import fused_mixer_triton as elementwise

        generator = torch.Generator().manual_seed(7)
        z, y, half = (torch.randn(1, 3, 9, generator=generator) for _ in range(3))
        reversed_delta = torch.randn(1, 3, 9, generator=generator)
        reversed_delta[..., 4] = -200.0
        bias = torch.zeros(3)
        grad_z = torch.empty_like(z)
        shifted, reversed_input = elementwise.prepare_reversed_scan(z, y, half, reversed_delta, bias, grad_z, 1e-30)
        assert torch.isfinite(reversed_input).all() and shifted[..., 5].min() == 1e-30 and (shifted[..., 0] == 1).all()
        torch.testing.assert_close(grad_z, torch.sigmoid(z) * y * half)
        expected_input = (F.silu(z) * half).flip(-1) / F.pad(
            F.softplus(reversed_delta).clamp(min=1e-30)[..., :-1], (1, 0), value=1.0
        )
        torch.testing.assert_close(reversed_input, expected_input)
