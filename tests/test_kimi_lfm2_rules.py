"""The per-channel gated delta rule's chunked kernel and the Kimi / LFM2 mixers, against step-by-step references.

The reference recurrence (``reference_kimi_lfm2.kda_loop``) runs one position at a time with one
decay per key channel and ``g``, ``β``, ``k``, ``q`` detached; relevances are its own Gradient x
Input. The chunked kernel must give the same outputs, last states and relevances on 600-token
inputs for any chunk size; each layout's mixer (Kimi Delta Attention, LFM2's gated short
convolution with either gate choice) the same as the reference's written-out mixer.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from captum_mamba import mamba_lrp_rules
from captum_mamba.families import KIMI_LINEAR, LFM2
from captum_mamba.kernels import gated_delta
from captum_mamba.kernels.gated_delta import differentiable_gated_delta, linear_gated_delta
from captum_mamba.rules import ExpertsRule, GatedDeltaRule, MixerRule, ShortConvGateRule

from conftest import randomise
from reference_kimi_lfm2 import kda_loop, kimi_delta_attention, short_conv


def _inputs(batch=2, length=600, key_heads=3, heads=3, dk=4, dv=6, seed=0, decay=3.0, beta_max=1.0):
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    q = F.normalize(normal(batch, length, key_heads, dk), dim=-1)
    k = F.normalize(normal(batch, length, key_heads, dk), dim=-1)
    v = normal(batch, length, heads, dv)
    g = -decay * torch.rand(batch, length, heads, dk, generator=generator, dtype=torch.float64)  # per key channel
    beta = beta_max * torch.rand(batch, length, heads, generator=generator, dtype=torch.float64)
    return q, k, v, g, beta


def _relevance(run, v: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(output, last state, relevance of v for the explained sum ⟨weights, output⟩)."""
    leaf = v.clone().requires_grad_()
    out, state = run(leaf)
    (gradient,) = torch.autograd.grad((out * weights).sum(), leaf)
    return out.detach(), state.detach(), (leaf * gradient).detach()


@pytest.mark.parametrize("chunk", [1, 7, 64, 100])
@pytest.mark.parametrize("grouped", [False, True], ids=["kimi_heads", "grouped_heads"])
def test_per_channel_kernel_equals_the_step_by_step_recurrence_on_600_tokens(chunk, grouped):
    q, k, v, g, beta = _inputs(
        key_heads=2 if grouped else 3, heads=4 if grouped else 3, beta_max=2.0 if grouped else 1.0
    )
    weights = torch.randn(v.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    scale = q.shape[-1] ** -0.5
    expected = _relevance(lambda x: kda_loop(q, k, x, g, beta, scale), v, weights)
    got = _relevance(lambda x: linear_gated_delta(q, k, x, g, beta, chunk=chunk), v, weights)
    for want, have in zip(expected, got):
        torch.testing.assert_close(have, want, atol=1e-10, rtol=0)
    # conservation: the output is linear in v, so the relevances sum to the explained output
    torch.testing.assert_close(got[2].sum(), (got[0] * weights).sum(), atol=1e-9, rtol=0)


def test_per_channel_decays_differ_from_a_per_head_decay():
    """Negative control: averaging the channels' decays into one per head gives another output."""
    q, k, v, g, beta = _inputs(length=50)
    per_channel, _ = linear_gated_delta(q, k, v, g, beta)
    per_head, _ = linear_gated_delta(q, k, v, g.mean(-1), beta)
    assert (per_channel - per_head).abs().max() > 1e-2


def test_strong_decays_one_step_inputs_and_bounded_slices(monkeypatch):
    """Decays down to exp(-60) per step and channel, single and partial chunks; small slices, any sub-block."""
    for length, decay in ((1, 3.0), (5, 3.0), (130, 60.0)):
        q, k, v, g, beta = _inputs(batch=1, length=length, decay=decay, seed=length)
        expected, state = kda_loop(q, k, v, g, beta, q.shape[-1] ** -0.5)
        got, got_state = linear_gated_delta(q, k, v, g, beta)
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
        torch.testing.assert_close(got_state, state, atol=1e-12, rtol=0)
    q, k, v, g, beta = _inputs(length=300, decay=20.0)
    whole, _ = linear_gated_delta(q, k, v, g, beta)
    monkeypatch.setattr(gated_delta, "_RATIO_BUDGET", 1)  # one chunk per slice
    sliced, _ = linear_gated_delta(q, k, v, g, beta)
    torch.testing.assert_close(sliced, whole, atol=1e-13, rtol=0)
    for block in (4, 64):  # sub-blocks of 4 steps; one sub-block per chunk (every factor element-wise)
        monkeypatch.setattr(gated_delta, "_SUB_BLOCK", block)
        torch.testing.assert_close(linear_gated_delta(q, k, v, g, beta)[0], whole, atol=1e-13, rtol=0)


def test_only_the_values_receive_gradients_and_the_rule_switched_off_is_the_plain_recurrence():
    q, k, v, g, beta = (t.requires_grad_() for t in _inputs(length=20))
    out, state = GatedDeltaRule().apply(q, k, v, g, beta)
    assert not state.requires_grad
    gradients = torch.autograd.grad(out.sum(), (q, k, v, g, beta), allow_unused=True)
    assert gradients[2] is not None and all(gradient is None for i, gradient in enumerate(gradients) if i != 2)

    inputs = _inputs(length=90)
    leaves = [t.clone().requires_grad_() for t in inputs]
    reference_leaves = [t.clone().requires_grad_() for t in inputs]
    out, _ = differentiable_gated_delta(*leaves, chunk=16)
    expected, _ = kda_loop(*reference_leaves, inputs[0].shape[-1] ** -0.5, hold=False)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got = torch.autograd.grad((out * weights).sum(), leaves)
    want = torch.autograd.grad((expected * weights).sum(), reference_leaves)
    for have, should in zip(got, want):
        torch.testing.assert_close(have, should, atol=1e-10, rtol=0)


def test_per_channel_decays_take_the_pytorch_kernel_and_refuse_the_cuda_backend():
    q, k, v, g, beta = _inputs(length=8)
    out, _ = GatedDeltaRule(backend="auto").apply(q, k, v, g, beta)
    torch.testing.assert_close(out, linear_gated_delta(q, k, v, g, beta)[0], atol=0, rtol=0)
    with pytest.raises(NotImplementedError, match="per-channel decays"):
        GatedDeltaRule(backend="cuda").apply(q, k, v, g, beta)
    with pytest.raises(ValueError, match="per key channel"):
        linear_gated_delta(q, k, v, g[..., :2], beta)  # neither per head nor per key channel


# --- each layout's mixer on 600 tokens against the written-out reference mixer ----------------------


def _mixer_relevance(forward, hidden: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = hidden.clone().requires_grad_()
    out = forward(leaf)
    (gradient,) = torch.autograd.grad((out * weights).sum(), leaf)
    return out.detach(), (leaf * gradient).detach()


def _hidden_and_weights(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    size = model.config.hidden_size
    hidden = torch.randn(2, 600, size, generator=torch.Generator().manual_seed(4)).double()
    weights = torch.randn(2, 600, size, generator=torch.Generator().manual_seed(5)).double()
    return hidden, weights


def test_kimi_delta_layout_equals_the_reference_mixer_on_600_tokens():
    torch.manual_seed(3)
    model = randomise(KIMI_LINEAR.build_lm(), 3).double().eval()
    mixer = model.model.layers[0].self_attn  # the tiny configuration begins with Kimi Delta Attention
    hidden, weights = _hidden_and_weights(model)
    expected = _mixer_relevance(lambda x: kimi_delta_attention(mixer, x), hidden, weights)
    with mamba_lrp_rules(model):
        got = _mixer_relevance(mixer, hidden, weights)
    torch.testing.assert_close(got[0], expected[0], atol=1e-10, rtol=0)
    # the sigmoid's identity rule has the gradient σ(z)/z: where a gate's z is near 0 the input's relevance
    # gathers large terms that cancel (the package stabilises z by ε·sign(z), a relative change below ε/|z|)
    assert expected[1].abs().max() > 10 * expected[0].abs().max()
    torch.testing.assert_close(got[1], expected[1], atol=1e-10, rtol=1e-10)
    # the mixer conserves: bias-free projections, the rules' identity / half / held-constant steps
    torch.testing.assert_close(got[1].sum((1, 2)), (got[0] * weights).sum((1, 2)), atol=1e-8, rtol=0)


@pytest.mark.parametrize("gates", ["constant", "half"])
def test_gated_short_conv_layout_equals_the_reference_mixer_on_600_tokens(gates):
    torch.manual_seed(6)
    model = randomise(LFM2.build_lm(), 6).double().eval()
    mixer = model.model.layers[0].conv
    hidden, weights = _hidden_and_weights(model)
    expected = _mixer_relevance(lambda x: short_conv(mixer, x, gates), hidden, weights)
    mixer_type = type(mixer)
    with mamba_lrp_rules(model, {mixer_type: MixerRule(conv_gate=ShortConvGateRule(gates))}):
        got = _mixer_relevance(mixer, hidden, weights)
    for have, want in zip(got, expected):
        torch.testing.assert_close(have, want, atol=1e-10, rtol=0)
    torch.testing.assert_close(got[1].sum((1, 2)), (got[0] * weights).sum((1, 2)), atol=1e-9, rtol=0)
    # the two choices distribute differently (negative control: the option is not ignored)
    other = "half" if gates == "constant" else "constant"
    with mamba_lrp_rules(model, {mixer_type: MixerRule(conv_gate=ShortConvGateRule(other))}):
        assert (_mixer_relevance(mixer, hidden, weights)[1] - got[1]).abs().max() > 1e-3


def test_experts_with_an_uncovered_activation_function_are_refused():
    class Experts(nn.Module):
        has_gate, is_concatenated, num_experts = True, True, 1

        def __init__(self, act) -> None:
            super().__init__()
            self.act_fn = act
            self.gate_up_proj = nn.Parameter(torch.ones(1, 4, 2))
            self.down_proj = nn.Parameter(torch.ones(1, 2, 2))

    from captum_mamba.rules.moe import _check_layout

    _check_layout(Experts(F.silu))  # LFM2-MoE's act_fn = F.silu: its identity rule
    with pytest.raises(NotImplementedError, match="module named act_fn"):
        _check_layout(Experts(torch.tanh))
    rule = ExpertsRule()
    out = rule.expert(Experts(F.silu), 0, torch.ones(3, 2, dtype=torch.float32))
    torch.testing.assert_close(out, torch.full((3, 2), 4 * F.silu(torch.tensor(2.0)).item()), atol=1e-6, rtol=0)
