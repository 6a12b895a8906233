"""Each rule on its own, against a naive re-implementation written here."""

from __future__ import annotations

import pytest
import torch
from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule, EpsilonRule, GammaRule, IdentityRule
from torch import nn

from captum_mamba import MambaLRP
from captum_mamba.rules import (
    GateHalfRule,
    GradientRule,
    LayerNormRule,
    RMSNormRule,
    SelectiveSSMRule,
    SiLUIdentityRule,
    rule_forward,
)

from conftest import embeddings_of, tiny_lm


@pytest.fixture(autouse=True)
def float64_by_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _relevance(fn, *inputs, upstream=None):
    """(output, Gradient x Input of each input for relevance R_out = upstream * output)."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*leaves)
    g = torch.ones_like(out) if upstream is None else upstream
    grads = torch.autograd.grad(out, leaves, g)
    return out.detach(), [x.detach() * gr for x, gr in zip(leaves, grads)], (g * out).detach()


def test_silu_identity_rule_passes_relevance_unchanged():
    x = torch.randn(5, 7)
    out, (r_in,), r_out = _relevance(SiLUIdentityRule().apply, x, upstream=torch.randn(5, 7))
    torch.testing.assert_close(out, torch.nn.functional.silu(x), atol=1e-15, rtol=0)
    torch.testing.assert_close(r_in, r_out, atol=1e-14, rtol=0)


def test_gate_half_rule_splits_product_relevance_evenly():
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    out, (r_a, r_b), r_out = _relevance(GateHalfRule().apply, a, b, upstream=torch.randn(4, 6))
    torch.testing.assert_close(out, a * b, atol=0, rtol=0)
    torch.testing.assert_close(r_a, 0.5 * r_out, atol=1e-14, rtol=0)
    torch.testing.assert_close(r_b, 0.5 * r_out, atol=1e-14, rtol=0)


def test_rmsnorm_rule_is_diagonal_and_value_preserving():
    x, w = torch.randn(3, 8), torch.randn(8)
    out, (r_in,), r_out = _relevance(lambda t: RMSNormRule().apply(t, w, 1e-6), x, upstream=torch.randn(3, 8))
    naive = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-6) * w
    torch.testing.assert_close(out, naive, atol=1e-14, rtol=0)
    torch.testing.assert_close(r_in, r_out, atol=1e-13, rtol=0)


def test_layernorm_rule_detaches_only_the_std():
    x, w, b = torch.randn(3, 8), torch.randn(8), torch.randn(8)
    norm = nn.LayerNorm(8)
    with torch.no_grad():
        norm.weight.copy_(w), norm.bias.copy_(b)
    upstream = torch.randn(3, 8)
    out, (r_in,), _ = _relevance(lambda t: LayerNormRule().module_forward(norm, t), x, upstream=upstream)
    torch.testing.assert_close(out, norm(x), atol=1e-12, rtol=0)
    std = torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + norm.eps)
    jac_centring = torch.eye(8) - 1.0 / 8  # d(x - mean)/dx
    expected = x * ((upstream * w / std) @ jac_centring)
    torch.testing.assert_close(r_in, expected, atol=1e-12, rtol=0)
    # without a bias, relevance is conserved: sum R_in = sum R_out
    _, (r_nb,), r_out_nb = _relevance(lambda t: LayerNormRule().apply(t, w, None, 1e-5), x, upstream=upstream)
    torch.testing.assert_close(r_nb.sum(-1), r_out_nb.sum(-1), atol=1e-12, rtol=0)


def _naive_scan(u, delta, A, B, C, D):
    batch, length, channels = u.shape
    y = torch.zeros_like(u)
    for b in range(batch):
        for d in range(channels):
            for n in range(A.shape[1]):
                h = 0.0
                for t in range(length):
                    h = torch.exp(delta[b, t, d] * A[d, n]) * h + delta[b, t, d] * B[b, t, n] * u[b, t, d]
                    y[b, t, d] = y[b, t, d] + C[b, t, n] * h
    return y + u * D


def test_selective_ssm_rule_equals_naive_scan_and_is_linear_in_u():
    torch.manual_seed(0)
    u, delta = torch.randn(2, 9, 3), torch.rand(2, 9, 3) * 0.5
    A, B, C, D = -torch.rand(3, 2) * 3, torch.randn(2, 9, 2), torch.randn(2, 9, 2), torch.randn(3)
    rule = SelectiveSSMRule(chunk=4)
    delta_leaf = delta.clone().requires_grad_()
    out = rule.apply(u, delta_leaf, A, B, C, D)
    torch.testing.assert_close(out, _naive_scan(u, delta, A, B, C, D), atol=1e-12, rtol=0)
    assert not out.requires_grad  # delta, A, B, C are held constant: no path from them
    upstream = torch.randn_like(u)
    _, (r_u,), r_out = _relevance(lambda t: rule.apply(t, delta, A, B, C, D), u, upstream=upstream)
    torch.testing.assert_close(r_u.sum(), r_out.sum(), atol=1e-12, rtol=0)  # linear in u: conservative


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_gradient_rule_is_the_plain_gradient(kind):
    module = nn.Linear(6, 4, bias=False) if kind == "linear" else nn.Conv1d(3, 3, 3, groups=3, padding=2, bias=False)
    x = torch.randn(2, 6) if isinstance(module, nn.Linear) else torch.randn(2, 3, 5)
    out, (r_plain,), _ = _relevance(module, x)
    ruled, (r_rule,), _ = _relevance(lambda t: rule_forward(module, t, GradientRule()), x)
    torch.testing.assert_close(ruled, out, atol=0, rtol=0)
    torch.testing.assert_close(r_rule, r_plain, atol=0, rtol=0)


@pytest.mark.parametrize(
    "rule, modify",
    [
        (EpsilonRule(epsilon=0.1), lambda w: w),
        (GammaRule(gamma=0.25), lambda w: w + 0.25 * w.clamp(min=0)),
        (Alpha1_Beta0_Rule(), lambda w: w.clamp(min=0)),
    ],
)
def test_captum_linear_rules_follow_the_textbook_formula(rule, modify):
    torch.manual_seed(1)
    linear = nn.Linear(6, 4, bias=False)
    weights = linear.weight.detach().clone()
    x, upstream = torch.randn(3, 6).abs(), torch.randn(3, 4)
    out, (r_in,), r_out = _relevance(lambda t: rule_forward(linear, t, rule), x, upstream=upstream)
    torch.testing.assert_close(out, linear(x), atol=1e-14, rtol=0)
    w = modify(linear.weight.detach())
    z = x @ w.T
    z = z + rule.STABILITY_FACTOR * torch.where(z >= 0, 1.0, -1.0)
    expected = x * ((r_out / z) @ w)  # R_i = x_i sum_j w'_ji R_j / (z'_j + eps sign z'_j)
    torch.testing.assert_close(r_in, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(linear.weight.detach(), weights, atol=0, rtol=0)  # the rule worked on a copy


def test_identity_rule_on_shape_preserving_layer():
    linear = nn.Linear(5, 5)
    x, upstream = torch.randn(2, 5), torch.randn(2, 5)
    _, (r_in,), r_out = _relevance(lambda t: rule_forward(linear, t, IdentityRule()), x, upstream=upstream)
    torch.testing.assert_close(r_in, r_out, atol=1e-7, rtol=0)
    with pytest.raises(ValueError, match="equal input and output shapes"):
        rule_forward(nn.Linear(5, 3), x, IdentityRule())


def test_per_module_rule_attribute_is_honoured(ids):
    model = tiny_lm(seed=71)
    embeds = embeddings_of(model, ids)
    default, _ = MambaLRP(model).attribute(embeds, target=2, return_convergence_delta=True)
    weights_before = model.backbone.layers[0].mixer.out_proj.weight.clone()
    model.backbone.layers[0].mixer.out_proj.rule = GammaRule(gamma=0.25)
    gamma, delta = MambaLRP(model).attribute(embeds, target=2, return_convergence_delta=True)
    assert not torch.allclose(gamma, default, atol=1e-6)
    assert delta.abs().max() < 1e-6  # LRP-gamma on a bias-free layer still conserves (up to its stabiliser)
    assert isinstance(model.backbone.layers[0].mixer.out_proj.rule, GammaRule)  # not deleted, unlike Captum's LRP
    assert torch.equal(model.backbone.layers[0].mixer.out_proj.weight, weights_before)
