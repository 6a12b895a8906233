"""The gated delta rule's linear-time chunked kernel and the sigmoid-gate rule, against step-by-step references.

The reference recurrence (``reference_gated_delta.delta_rule_loop``) runs one position at a time
with ``α``, ``β``, ``k`` and ``q`` detached; relevances are its own Gradient x Input. The chunked
kernel must give the same outputs, last states and relevances on 600-token inputs for any chunk
size, also inside each Gated DeltaNet layout's mixer against the reference's written-out mixer.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from captum_mamba import MissingDependencyError, mamba_lrp_rules
from captum_mamba.families import OLMO_HYBRID, QWEN3_5, QWEN3_NEXT
from captum_mamba.kernels.gated_delta import differentiable_gated_delta, linear_gated_delta
from captum_mamba.rules import GatedDeltaRule, SigmoidGateRule

from conftest import randomise
from reference_gated_delta import delta_rule_loop, gated_delta_net


def _inputs(batch=2, length=600, key_heads=2, heads=4, dk=4, dv=6, seed=0, decay=3.0, beta_max=2.0):
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    q = F.normalize(normal(batch, length, key_heads, dk), dim=-1)
    k = F.normalize(normal(batch, length, key_heads, dk), dim=-1)
    v = normal(batch, length, heads, dv)
    g = -decay * torch.rand(batch, length, heads, generator=generator, dtype=torch.float64)
    beta = beta_max * torch.rand(batch, length, heads, generator=generator, dtype=torch.float64)
    return q, k, v, g, beta


def _relevance(run, v: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(output, last state, relevance of v for the explained sum ⟨weights, output⟩)."""
    leaf = v.clone().requires_grad_()
    out, state = run(leaf)
    (gradient,) = torch.autograd.grad((out * weights).sum(), leaf)
    return out.detach(), state.detach(), (leaf * gradient).detach()


@pytest.mark.parametrize("chunk", [1, 7, 64, 100])
def test_chunked_kernel_equals_the_step_by_step_recurrence_on_600_tokens(chunk):
    q, k, v, g, beta = _inputs()
    weights = torch.randn(v.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    scale = q.shape[-1] ** -0.5
    expected = _relevance(lambda x: delta_rule_loop(q, k, x, g, beta, scale), v, weights)
    got = _relevance(lambda x: linear_gated_delta(q, k, x, g, beta, chunk=chunk), v, weights)
    for want, have in zip(expected, got):
        torch.testing.assert_close(have, want, atol=1e-10, rtol=0)
    # conservation: the output is linear in v, so the relevances sum to the explained output
    torch.testing.assert_close(got[2].sum(), (got[0] * weights).sum(), atol=1e-9, rtol=0)


def test_strong_decays_and_one_step_inputs():
    """Decays down to exp(-60) per step (products underflow inside a chunk), single and partial chunks."""
    for length, decay in ((1, 3.0), (5, 3.0), (130, 60.0)):
        q, k, v, g, beta = _inputs(batch=1, length=length, decay=decay, seed=length)
        expected, state = delta_rule_loop(q, k, v, g, beta, q.shape[-1] ** -0.5)
        got, got_state = linear_gated_delta(q, k, v, g, beta)
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
        torch.testing.assert_close(got_state, state, atol=1e-12, rtol=0)


def test_only_the_values_receive_gradients():
    q, k, v, g, beta = (t.requires_grad_() for t in _inputs(length=20))
    out, state = GatedDeltaRule().apply(q, k, v, g, beta)
    assert not state.requires_grad
    gradients = torch.autograd.grad(out.sum(), (q, k, v, g, beta), allow_unused=True)
    assert gradients[2] is not None and all(gradient is None for i, gradient in enumerate(gradients) if i != 2)


def test_the_rule_switched_off_is_the_plain_recurrence():
    """The differentiable kernel (ablations, negative controls): every input's gradient equals the plain loop's."""
    inputs = _inputs(length=90)
    leaves = [t.clone().requires_grad_() for t in inputs]
    reference_leaves = [t.clone().requires_grad_() for t in inputs]
    out, _ = differentiable_gated_delta(*leaves, chunk=16)
    expected, _ = delta_rule_loop(*reference_leaves, inputs[0].shape[-1] ** -0.5, hold=False)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got = torch.autograd.grad((out * weights).sum(), leaves)
    want = torch.autograd.grad((expected * weights).sum(), reference_leaves)
    for have, should in zip(got, want):
        torch.testing.assert_close(have, should, atol=1e-10, rtol=0)


def test_the_fla_backend_is_a_clear_dispatch_point():
    q, k, v, g, beta = _inputs(length=8)
    out, _ = GatedDeltaRule(backend="auto").apply(q, k, v, g, beta)  # CPU float64: the PyTorch kernel
    torch.testing.assert_close(out, linear_gated_delta(q, k, v, g, beta)[0], atol=0, rtol=0)
    try:
        import fla  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match="flash-linear-attention"):
            GatedDeltaRule(backend="cuda").apply(q, k, v, g, beta)
    else:  # pragma: no cover - fla installed
        with pytest.raises(ValueError, match="CUDA float16 / bfloat16"):
            GatedDeltaRule(backend="cuda").apply(q, k, v, g, beta)


# --- each layout's mixer on 600 tokens against the written-out reference mixer ----------------------


@pytest.mark.parametrize("family", [QWEN3_NEXT, QWEN3_5, OLMO_HYBRID], ids=lambda f: f.name)
def test_each_gated_delta_layout_equals_the_reference_mixer_on_600_tokens(family):
    torch.manual_seed(3)
    model = randomise(family.build_lm(), 3).double().eval()
    mixer = model.model.layers[0].linear_attn  # the tiny configurations begin with a Gated DeltaNet
    hidden = torch.randn(2, 600, model.config.hidden_size, generator=torch.Generator().manual_seed(4)).double()
    weights = torch.randn(2, 600, model.config.hidden_size, generator=torch.Generator().manual_seed(5)).double()

    def relevance(forward):
        leaf = hidden.clone().requires_grad_()
        out = forward(leaf)
        (gradient,) = torch.autograd.grad((out * weights).sum(), leaf)
        return out.detach(), (leaf * gradient).detach()

    expected = relevance(lambda x: gated_delta_net(mixer, x))
    with mamba_lrp_rules(model):
        got = relevance(mixer)
    for have, want in zip(got, expected):
        torch.testing.assert_close(have, want, atol=1e-10, rtol=0)
    # the mixer conserves: bias-free projections, the rules' identity / half / held-constant steps
    torch.testing.assert_close(got[1].sum((1, 2)), (got[0] * weights).sum((1, 2)), atol=1e-9, rtol=0)


# --- the sigmoid gate rule at PyTorch's function interface -----------------------------------------


class _Gated(nn.Module):
    """Three ways a forward gates by a sigmoid, and one sigmoid that is no gate."""

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        a = x * torch.sigmoid(g)
        b = F.sigmoid(g) * x
        c = x * g.sigmoid()
        return a + b + c + torch.sigmoid(x).sum() * 0  # the last sigmoid is summed, not multiplied


@pytest.mark.parametrize("mode", ["half", "constant"])
def test_sigmoid_gates_are_found_in_a_modules_own_forward(mode):
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(3, 5, generator=generator, dtype=torch.float64).requires_grad_()
    g = torch.randn(3, 5, generator=generator, dtype=torch.float64).requires_grad_()
    module = _Gated()
    with SigmoidGateRule(mode).in_forward() as applied:
        out = module(x, g)
    assert len(applied) == 3
    assert torch.equal(out, module(x, g))  # the same value, bit for bit
    gx, gg = torch.autograd.grad(out.sum(), (x, g), allow_unused=True)
    product = 3 * x * torch.sigmoid(g)
    if mode == "half":  # x and g receive half of each product's relevance (identity rule on the sigmoid)
        torch.testing.assert_close(x * gx, 0.5 * product, atol=1e-12, rtol=0)
        torch.testing.assert_close(g * gg, 0.5 * product, atol=1e-12, rtol=0)
    else:  # the gate held constant: all of it to x
        torch.testing.assert_close(x * gx, product, atol=1e-12, rtol=0)
        assert gg is None
    with pytest.raises(ValueError, match="mode must be"):
        SigmoidGateRule("uniform")


def test_a_moe_block_without_a_gated_shared_expert_is_refused():
    from captum_mamba.rules import MoEBlockRule

    class Ungated(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * x

    with pytest.raises(TypeError, match="no product with a sigmoid gate"):
        MoEBlockRule().module_forward(Ungated(), torch.ones(2, 3))
    assert torch.equal(MoEBlockRule(shared_gate=None).module_forward(Ungated(), torch.ones(2, 3)), 2 * torch.ones(2, 3))


def test_a_flash_linear_attention_kernel_whose_backward_fails_is_not_used():
    """fla 0.6 refuses its backward with Triton < 3.7.1 on Hopper GPUs: the probe reports it (run on the CPU here)."""
    from captum_mamba.kernels.gated_delta import linear_gated_delta
    from captum_mamba.rules.delta import probe_backward

    def refusing(q, k, v, g, beta, scale, output_final_state):
        out, state = linear_gated_delta(q, k, v, g, beta, scale)

        class Refuse(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x.clone()

            @staticmethod
            def backward(ctx, grad):
                raise RuntimeError("Triton >= 3.4.0 and < 3.7.1 on Hopper GPUs produces incorrect results")

        return Refuse.apply(out), state

    def working(q, k, v, g, beta, scale, output_final_state):
        return linear_gated_delta(q, k, v, g, beta, scale)

    cpu = torch.device("cpu")
    assert "produces incorrect results" in probe_backward(refusing, cpu, torch.float32)
    assert probe_backward(working, cpu, torch.float32) is None
