"""Kimi Linear (Kimi Delta Attention, MLA, MoE) and LFM2 / LFM2-MoE (gated short convolutions): beyond the family suite.

The shared suite (``family_checks.py``, ``test_family_suite.py``) checks these families as every
other, with the default rules (LFM2's gates by the half rule): the forward with the rules equals
the model's and the step-by-step reference's (``reference_kimi_lfm2.py``) in both attention
implementations, relevances equal the reference's in both attention modes (LFM2 also with the
biases ``conv_bias`` gives), CP-LRP conserves at every layer, the biases' share, right-padded
batches, the package's classifiers, restoration and a sweep over random configurations. Here:
LFM2's other gate choice (``B`` and ``C`` held constant) through the suite's reference and
conservation checks, the negative controls, the held-constant paths (routers, Kimi's forget gate
and β, LFM2's constant gates), the half rule's split of a short convolution's relevance on 600
tokens, the sigmoid-gated norm rule, prefill caches, rule plans, the relevance split by layer kind,
the package's classifiers as Hugging Face models and the gate rule's options. transformers' float32 casts are removed by the suite's fixture
(``float64_faithful_hf``; ``faithful_float64.py``).
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn
from transformers.models.kimi_linear import modeling_kimi_linear
from transformers.models.lfm2 import modeling_lfm2
from transformers.models.lfm2_moe import modeling_lfm2_moe

from captum_mamba import MambaLRP, mamba_lrp_rules
from captum_mamba.families import KIMI_LINEAR, LFM2, LFM2_MOE
from captum_mamba.rules import GatedRMSNormRule, GradientRule, MixerRule, ShortConvGateRule

from faithful_float64 import gated_norm_sigmoid
from family_checks import check_conservation_at_every_layer, check_reference, ids_of, lm_of, rules_for
from linear_mixer_checks import (
    check_negative_controls,
    check_package_classifier,
    check_prefill_cache,
    check_relevance_split,
    gradients_reaching,
    routers_of,
)

FAMILIES = {family.name: family for family in (KIMI_LINEAR, LFM2, LFM2_MOE)}
MIXER = {
    "kimi_linear": modeling_kimi_linear.KimiLinearDeltaAttention,
    "lfm2": modeling_lfm2.Lfm2ShortConv,
    "lfm2_moe": modeling_lfm2_moe.Lfm2MoeShortConv,
}


def gates(name: str, choice: str) -> dict[type[nn.Module], MixerRule]:
    """LFM2's gate choice for its short convolutions (``"half"``: the default; ``"constant"``: B and C held constant)."""
    return {MIXER[name]: MixerRule(conv_gate=ShortConvGateRule(choice))}


@pytest.mark.parametrize("name", ["lfm2", "lfm2_moe"])
def test_constant_gates_equal_the_reference_and_conserve_at_every_layer(name, float64_faithful_hf):
    """The suite's reference and conservation checks with B and C held constant (the reference's ``gates="constant"``)."""
    constant = gates(name, "constant")
    check_reference(FAMILIES[name], extra_rules=constant, reference_options={"gates": "constant"})
    check_conservation_at_every_layer(FAMILIES[name], extra_rules=constant)


def _ablations(name: str) -> list[dict]:
    if name == "kimi_linear":
        return [
            {MIXER[name]: MixerRule(delta=None)},  # the recurrence with q, k, α, β live
            {modeling_kimi_linear.KimiLinearRMSNormGated: GatedRMSNormRule(gate=None, norm_before_gate=True)},
            {modeling_kimi_linear.KimiLinearRMSNormGated: GatedRMSNormRule(sigmoid=None, norm_before_gate=True)},
        ]
    return [{MIXER[name]: MixerRule(conv_gate=None)}]  # both products plain


@pytest.mark.parametrize("name", list(FAMILIES))
def test_negative_controls(name, float64_faithful_hf):
    """Switching off Kimi's delta rule or its gated norm's rules, or LFM2's gate rule, breaks the equality."""
    switched_off = {"rules": False} if name == "kimi_linear" else {"gates": "plain"}
    check_negative_controls(FAMILIES[name], _ablations(name), switched_off)


def _watched(name: str, model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs carry no relevance under the rules: those feeding only held-constant factors."""
    watched = routers_of(model)
    if name == "kimi_linear":
        for mixer in (m for m in model.modules() if isinstance(m, MIXER[name])):
            watched += [mixer.b_proj, mixer.forget_gate.f_a_proj, mixer.forget_gate.f_b_proj]
    return watched


@pytest.mark.parametrize("name", list(FAMILIES))
def test_no_relevance_into_the_held_constant_paths(name):
    """No gradient reaches the routers, nor Kimi's forget gate and β projections, nor LFM2's B and C (constant gates)."""
    family = FAMILIES[name]
    model = lm_of(family, seed=6)
    embeds = model.get_input_embeddings()(ids_of(1, 6, seed=6)).detach()
    gated: list[str] = []

    def record_gates(module, inputs, output):  # LFM2's in_proj: [B | C | x]; B and C carry none
        width = output.shape[-1] // 3
        output.register_hook(lambda gradient: gated.append("B|C") if gradient[..., : 2 * width].any() else None)

    kimi = name == "kimi_linear"
    handles = (
        []
        if kimi
        else [m.in_proj.register_forward_hook(record_gates) for m in model.modules() if isinstance(m, MIXER[name])]
    )
    try:
        with gradients_reaching(_watched(name, model)) as reached:
            held = {} if kimi else gates(name, "constant")
            MambaLRP(model, rules=rules_for(family, "cp", held)).attribute(embeds, target=2)
            assert reached == [] and gated == []
            live = {MIXER[name]: MixerRule(delta=None)} if kimi else gates(name, "half")
            MambaLRP(model, rules=rules_for(family, "cp", live)).attribute(embeds, target=2)
            assert reached if kimi else gated  # the hooks do see gradients where those factors carry relevance
    finally:
        for handle in handles:
            handle.remove()


def _keep_output(kept: dict, module: nn.Module, inputs, output: torch.Tensor) -> None:
    kept.setdefault("out", output)


@pytest.mark.parametrize("name", ["lfm2", "lfm2_moe"])
def test_the_half_rule_splits_a_short_convolutions_relevance_half_quarter_quarter(name):
    """Per mixer: C receives half of y's relevance, B and x a quarter each; the constant gates give all of it to x."""
    model = lm_of(FAMILIES[name], seed=7)
    mixer = model.model.layers[0].conv
    hidden = torch.randn(2, 600, model.config.hidden_size, generator=torch.Generator().manual_seed(8)).double()
    weights = torch.randn(2, 600, model.config.hidden_size, generator=torch.Generator().manual_seed(9)).double()
    width = model.config.hidden_size
    for choice, shares in (("half", (0.25, 0.5, 0.25)), ("constant", (0.0, 0.0, 1.0))):
        kept: dict[str, torch.Tensor] = {}
        handle = mixer.in_proj.register_forward_hook(functools.partial(_keep_output, kept))
        try:
            leaf = hidden.clone().requires_grad_()
            with mamba_lrp_rules(model, gates(name, choice)):
                out = mixer(leaf)
                explained = (out * weights).sum()
                projected = kept["out"]
                (gradient,) = torch.autograd.grad(explained, projected)
        finally:
            handle.remove()
        relevance = (projected * gradient).detach()
        for part, share in zip(range(3), shares):  # B, C, x
            torch.testing.assert_close(
                relevance[..., part * width : (part + 1) * width].sum(), share * explained.detach(), atol=1e-9, rtol=0
            )


def test_sigmoid_gated_norm_rule_splits_the_product_and_refuses_other_activations():
    norm = modeling_kimi_linear.KimiLinearRMSNormGated(6).double()
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, 6))
    generator = torch.Generator().manual_seed(10)
    y = torch.randn(4, 6, generator=generator, dtype=torch.float64).requires_grad_()
    z = torch.randn(4, 6, generator=generator, dtype=torch.float64).requires_grad_()
    rule = GatedRMSNormRule(norm_before_gate=True)
    out = rule.module_forward(norm, y, z)
    torch.testing.assert_close(out, gated_norm_sigmoid(norm, y, z), atol=1e-14, rtol=0)
    gy, gz = torch.autograd.grad(out.sum(), (y, z))
    total = out.detach().sum()
    # half the product to y (through the held-constant normaliser), half to z (the sigmoid's identity rule)
    torch.testing.assert_close((y * gy).sum(), 0.5 * total, atol=1e-12, rtol=0)
    torch.testing.assert_close((z * gz).sum(), 0.5 * total, atol=1e-8, rtol=0)  # ε-stabilised division
    norm.activation = "tanh"
    with pytest.raises(ValueError, match="covers gates activated by"):
        rule.module_forward(norm, y, z)
    with pytest.raises(ValueError, match="activation must be one of"):
        GatedRMSNormRule(activation="relu")


@pytest.mark.parametrize("name", list(FAMILIES))
def test_prefill_cache_equals_the_models(name, float64_faithful_hf):
    """With a cache, the rules fill it as the model does (the short convolutions' and recurrences' states)."""
    check_prefill_cache(FAMILIES[name])


@pytest.mark.parametrize("name", list(FAMILIES))
def test_plan_names_the_rules(name):
    model = lm_of(FAMILIES[name], seed=12)
    plan = MambaLRP(model).rule_plan()
    kinds = {type(rule).__name__ for rule in plan.rules.values()}
    assert {"MixerRule", "AttentionRule", "GatedMLPRule", "RMSNormRule"} <= kinds
    if name != "lfm2":
        assert "ExpertsRule" in kinds
    names = dict(model.named_modules())
    mixer = next(path for path, m in names.items() if isinstance(m, MIXER[name]))
    if name == "kimi_linear":
        assert "KimiDeltaLayout" in repr(plan.rules[mixer])
        assert isinstance(plan.rules[mixer + ".o_norm"], GatedRMSNormRule)
        assert isinstance(plan.rules[mixer + ".conv1d"], GradientRule)
    else:
        assert repr(plan.rules[mixer]) == "MixerRule(GatedShortConvLayout, all rules, gates 'half')"  # the default
        assert isinstance(plan.rules[mixer + ".conv"], GradientRule)


#: The relevance split of each tiny model: (layer, kind) per mixer, attention, MLP and experts module.
SPLITS = {
    "kimi_linear": [
        (0, "linear_attention"),
        (0, "mlp"),
        (1, "attention"),
        (1, "moe"),
        (1, "mlp"),  # the shared experts, added after the routed ones
        (2, "linear_attention"),
        (2, "moe"),
        (2, "mlp"),
    ],
    "lfm2": [(0, "conv"), (0, "mlp"), (1, "attention"), (1, "mlp"), (2, "conv"), (2, "mlp")],
    "lfm2_moe": [(0, "conv"), (0, "mlp"), (1, "attention"), (1, "moe"), (2, "conv"), (2, "moe")],
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_relevance_split_by_layer_kind_equals_layer_mamba_lrp_per_module(name):
    check_relevance_split(FAMILIES[name], SPLITS[name])


@pytest.mark.parametrize("name", list(FAMILIES))
def test_package_classifier(name, tmp_path):
    """transformers ships no sequence classifier for these families: the package's heads are declared."""
    check_package_classifier(FAMILIES[name], tmp_path)


def test_gate_rule_options_and_ablation_names():
    with pytest.raises(ValueError, match="mode must be one of"):
        ShortConvGateRule("uniform")
    rule = MixerRule(conv_gate=ShortConvGateRule("half"))
    assert rule.without({"gate"}).conv_gate_rule is None  # the evaluation's "gate" ablation covers these gates
    assert rule.without({"ssm"}).conv_gate_rule is rule.conv_gate_rule
    assert "gates 'half'" in repr(rule.with_layout(LFM2.mixers[modeling_lfm2.Lfm2ShortConv]))
    assert ShortConvGateRule().mode == "half"  # the default chosen by benchmarks/lfm2_gate_choice.py
