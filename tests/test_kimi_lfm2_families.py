"""Kimi Linear (Kimi Delta Attention, MLA, MoE) and LFM2 / LFM2-MoE (gated short convolutions), on tiny float64 models.

The reference (``reference_kimi_lfm2.py``, importing no package rule code) writes Kimi Delta
Attention out step by step (the per-channel recurrence as a loop over positions with ``g``, ``β``,
``k``, ``q`` detached), the gated short convolution with either gate choice, the attention with
loops over heads and positions, the routers and the experts loop. transformers computes the
Kimi delta rule, the gated norm, the forget gate and every RMSNorm in float32 even for float64
models, and Kimi routes in float32 (a batch and its rows alone would then route with weights an
ulp apart); the fixture below removes those casts (the delta rule by the reference's plain
recurrence, the norms and the router (one expert group) by cast-free forwards, ``float()``
keeping float64 inside the forget gate), so the model's own forward can be compared at 1e-10.
"""

from __future__ import annotations

import functools
import math
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.kimi_linear import modeling_kimi_linear
from transformers.models.lfm2 import modeling_lfm2
from transformers.models.lfm2_moe import modeling_lfm2_moe

from captum_mamba import LayerMambaLRP, MambaLRP, mamba_lrp_rules, relevance_split
from captum_mamba.families import KIMI_LINEAR, LFM2, LFM2_MOE
from captum_mamba.rules import GatedRMSNormRule, GradientRule, MixerRule, ShortConvGateRule
from captum_mamba.rules.attention import AttentionRule

from conftest import _rms_norm_without_narrowing, randomise
from reference_kimi_lfm2 import float64_chunk_kda, reference, reference_logits

VOCAB = 40
FAMILIES = {family.name: family for family in (KIMI_LINEAR, LFM2, LFM2_MOE)}
ATTENTION = {
    "kimi_linear": modeling_kimi_linear.KimiLinearAttention,
    "lfm2": modeling_lfm2.Lfm2Attention,
    "lfm2_moe": modeling_lfm2_moe.Lfm2MoeAttention,
}
MIXER = {
    "kimi_linear": modeling_kimi_linear.KimiLinearDeltaAttention,
    "lfm2": modeling_lfm2.Lfm2ShortConv,
    "lfm2_moe": modeling_lfm2_moe.Lfm2MoeShortConv,
}
#: (family, gate choice): Kimi has no short-convolution gates; LFM2's two choices are both tested.
CASES = [("kimi_linear", "constant")] + [
    (name, gates) for name in ("lfm2", "lfm2_moe") for gates in ("constant", "half")
]


def _gated_norm_sigmoid(self, hidden_states, gate):
    """Kimi's output norm ``rmsnorm(o) · w · σ(gate)`` without its float32 cast."""
    normed = hidden_states * torch.rsqrt(hidden_states.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
    return self.weight * normed * torch.sigmoid(gate)


def _router_without_narrowing(self, hidden_states):
    """Kimi's router (one expert group) without its float32 casts: sigmoid scores, corrected top-k, renormalised."""
    hidden_states = hidden_states.view(-1, self.hidden_dim)
    logits = F.linear(hidden_states, self.weight)
    scores = logits.sigmoid()
    indices = torch.topk(scores + self.e_score_correction_bias, k=self.top_k, dim=-1, sorted=False)[1]
    weights = scores.gather(1, indices)
    if self.norm_topk_prob:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return logits, weights * self.routed_scaling_factor, indices


@contextmanager
def _float_keeping_float64():
    """``Tensor.float()`` leaves float64 tensors as they are (only inside the wrapped forward below)."""
    narrowing = torch.Tensor.float

    def float_keeping_float64(self, *args, **kwargs):
        return self if self.dtype == torch.float64 else narrowing(self, *args, **kwargs)

    torch.Tensor.float = float_keeping_float64
    try:
        yield
    finally:
        torch.Tensor.float = narrowing


def _without_float_casts(forward):
    @functools.wraps(forward)
    def wrapped(self, *args, **kwargs):
        with _float_keeping_float64():
            return forward(self, *args, **kwargs)

    return wrapped


@pytest.fixture(autouse=True)
def faithful_float64(monkeypatch):
    """transformers' float32 casts removed from the three families (see the module docstring)."""
    monkeypatch.setattr(modeling_kimi_linear, "chunk_kimi_delta_attention", float64_chunk_kda)
    monkeypatch.setattr(modeling_kimi_linear.KimiLinearRMSNormGated, "forward", _gated_norm_sigmoid)
    monkeypatch.setattr(modeling_kimi_linear.KimiLinearTopkRouter, "forward", _router_without_narrowing)
    forget = modeling_kimi_linear.KimiLinearForgetGate
    monkeypatch.setattr(forget, "forward", _without_float_casts(forget.forward))
    for norm in (modeling_kimi_linear.KimiLinearRMSNorm, modeling_lfm2.Lfm2RMSNorm, modeling_lfm2_moe.Lfm2MoeRMSNorm):
        monkeypatch.setattr(norm, "forward", _rms_norm_without_narrowing)


def build(name: str, seed: int = 0, attention: str = "sdpa", **overrides) -> nn.Module:
    torch.manual_seed(seed)
    config = FAMILIES[name].config(**overrides)
    config._attn_implementation = attention
    model = randomise(FAMILIES[name].causal_lm(config), seed)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed + 100)
        for parameter in model.parameters():  # the stacked expert weights: scaled by their fan-in
            if parameter.dim() == 3:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / math.sqrt(parameter.shape[-1]))
        for module in model.modules():  # routing-only biases, so that they take part in the choice
            for bias in ("expert_bias", "e_score_correction_bias"):
                if isinstance(getattr(module, bias, None), torch.Tensor):
                    getattr(module, bias).copy_(0.1 * torch.randn(getattr(module, bias).shape, generator=generator))
    return model.double().eval()


def ids_of(batch: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def embeds_of(model: nn.Module, batch: int, length: int, seed: int) -> torch.Tensor:
    return model.get_input_embeddings()(ids_of(batch, length, seed)).detach()


def rules_for(name: str, mode: str, gates: str = "half") -> dict:
    rules = {ATTENTION[name]: AttentionRule(mode)}
    if name != "kimi_linear":
        rules[MIXER[name]] = MixerRule(conv_gate=ShortConvGateRule(gates))
    return rules


# --- the families ---------------------------------------------------------------------------------


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_forward_with_rules_equals_the_model_forward(name, attention):
    model = build(name, seed=1, attention=attention)
    embeds = embeds_of(model, 2, 9, seed=1)
    with torch.no_grad():
        original = model(inputs_embeds=embeds).logits
        with mamba_lrp_rules(model):
            ruled = model(inputs_embeds=embeds).logits
        expected = reference_logits(model, embeds, "cp")
    # eager attention computes its softmax in float32 even for float64 models; the rules never narrow
    torch.testing.assert_close(ruled, original, atol=1e-10 if attention == "sdpa" else 1e-5, rtol=0)
    torch.testing.assert_close(ruled[:, -1], expected, atol=1e-10, rtol=0)
    assert model.config._attn_implementation == attention


@pytest.mark.parametrize("mode", ["attnlrp", "cp"])
@pytest.mark.parametrize(("name", "gates"), CASES)
def test_relevances_equal_the_step_by_step_reference(name, gates, mode):
    model = build(name, seed=2)
    embeds = embeds_of(model, 2, 7, seed=2)
    expected, logit = reference(model, embeds, target=5, mode=mode, gates=gates)
    relevance, delta = MambaLRP(model, rules=rules_for(name, mode, gates)).attribute(
        embeds, target=5, return_convergence_delta=True
    )
    torch.testing.assert_close(relevance, expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(delta, expected.sum((1, 2)) - logit, atol=1e-10, rtol=0)
    if mode == "cp":
        assert delta.abs().max() < 1e-10  # bias-free: the delta rule, both gate choices and CP-LRP conserve exactly
    else:
        assert delta.abs().max() > 1e-6  # the softmax rule is not conservative


@pytest.mark.parametrize(("name", "gates"), CASES)
def test_cp_lrp_conserves_at_every_layer(name, gates):
    model = build(name, seed=3)
    ids = ids_of(2, 7, seed=3)
    with torch.no_grad():  # the logit from the float64 reference forward, computed independently
        logit = reference_logits(model, model.get_input_embeddings()(ids), "cp")[:, 4]
    for layer in [model.get_input_embeddings(), *model.model.layers]:
        for to_input in (False, True):
            relevance = LayerMambaLRP(model, layer, rules=rules_for(name, "cp", gates)).attribute(
                ids, target=4, attribute_to_layer_input=to_input and layer is not model.get_input_embeddings()
            )
            relevance = relevance[0] if isinstance(relevance, tuple) else relevance
            torch.testing.assert_close(relevance.sum((1, 2)), logit, atol=1e-8, rtol=0)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_right_padded_batch_equals_rows_alone(name):
    model = build(name, seed=4)
    ids = ids_of(3, 8, seed=4)
    lengths = [8, 5, 2]
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    explainer = LayerMambaLRP(model, model.get_input_embeddings(), rules=rules_for(name, "attnlrp", "half"))
    together = explainer.attribute(ids, target=[1, 2, 3], additional_forward_args=mask).sum(-1)
    for row, length in enumerate(lengths):
        alone = explainer.attribute(ids[row : row + 1, :length], target=row + 1).sum(-1)
        torch.testing.assert_close(together[row, :length], alone[0], atol=1e-10, rtol=0)
        assert torch.all(together[row, length:] == 0)


def _ablations(name: str) -> list[dict]:
    if name == "kimi_linear":
        return [
            {MIXER[name]: MixerRule(delta=None)},  # the recurrence with q, k, α, β live
            {modeling_kimi_linear.KimiLinearRMSNormGated: GatedRMSNormRule(gate=None, norm_before_gate=True)},
            {modeling_kimi_linear.KimiLinearRMSNormGated: GatedRMSNormRule(sigmoid=None, norm_before_gate=True)},
        ]
    return [{MIXER[name]: MixerRule(conv_gate=None)}]  # both products plain


@pytest.mark.parametrize("name", list(FAMILIES))
def test_negative_controls(name):
    model = build(name, seed=5)
    embeds = embeds_of(model, 2, 7, seed=5)
    expected, logit = reference(model, embeds, target=1, mode="cp")
    leaf = embeds.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(model(inputs_embeds=leaf).logits[:, -1, 1].sum(), leaf)
    plain = (leaf * gradient).detach()
    assert ((plain.sum((1, 2)) - logit).abs() > 0.1 * logit.abs()).any()  # Gradient x Input misses the logit
    for ablation in _ablations(name):
        ablated = MambaLRP(model, rules={**rules_for(name, "cp"), **ablation}).attribute(embeds, target=1)
        assert (ablated - expected).abs().max() > 1e-4  # dropping the rule breaks the equality
    # and the reference itself with the rule switched off is what the first ablation gives
    x = embeds.clone().requires_grad_()
    switched_off = dict(gates="plain") if name != "kimi_linear" else dict(rules=False)
    (live,) = torch.autograd.grad(reference_logits(model, x, "cp", **switched_off)[:, 1].sum(), x)
    ablated = MambaLRP(model, rules={**rules_for(name, "cp"), **_ablations(name)[0]}).attribute(embeds, target=1)
    torch.testing.assert_close(ablated, (x * live).detach(), atol=1e-10, rtol=0)


def _watched(name: str, model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs carry no relevance under the rules: those feeding only held-constant factors."""
    watched = [m.gate for m in model.modules() if hasattr(m, "experts")]  # the routers
    if name == "kimi_linear":
        for mixer in (m for m in model.modules() if isinstance(m, MIXER[name])):
            watched += [mixer.b_proj, mixer.forget_gate.f_a_proj, mixer.forget_gate.f_b_proj]
    return list(dict.fromkeys(watched))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_no_relevance_into_the_held_constant_paths(name):
    """No gradient reaches the routers, nor Kimi's forget gate and β projections, nor LFM2's B and C (constant gates)."""
    model = build(name, seed=6)
    embeds = embeds_of(model, 1, 6, seed=6)
    reached: list[str] = []

    def record(module, inputs, outputs):
        output = outputs[0] if isinstance(outputs, tuple) else outputs
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(lambda gradient: reached.append(type(module).__name__))

    def record_gates(module, inputs, output):  # LFM2's in_proj: [B | C | x]; B and C carry none
        width = output.shape[-1] // 3
        output.register_hook(lambda gradient: reached.append("B|C") if gradient[..., : 2 * width].any() else None)

    handles = [module.register_forward_hook(record) for module in _watched(name, model)]
    if name != "kimi_linear":
        handles += [
            m.in_proj.register_forward_hook(record_gates) for m in model.modules() if isinstance(m, MIXER[name])
        ]
    try:
        MambaLRP(model, rules=rules_for(name, "cp", "constant")).attribute(embeds, target=2)
        assert reached == []
        if name == "kimi_linear":
            ablated = {MIXER[name]: MixerRule(delta=None)}
        else:
            ablated = {MIXER[name]: MixerRule(conv_gate=ShortConvGateRule("half"))}
        MambaLRP(model, rules={**rules_for(name, "cp"), **ablated}).attribute(embeds, target=2)
        assert reached  # the hooks do see gradients where those factors carry relevance
    finally:
        for handle in handles:
            handle.remove()


def _keep_output(kept: dict, module: nn.Module, inputs, output: torch.Tensor) -> None:
    kept.setdefault("out", output)


@pytest.mark.parametrize("name", ["lfm2", "lfm2_moe"])
def test_the_half_rule_splits_a_short_convolutions_relevance_half_quarter_quarter(name):
    """Per mixer: C receives half of y's relevance, B and x a quarter each; the constant gates give all of it to x."""
    model = build(name, seed=7)
    mixer = model.model.layers[0].conv
    hidden = torch.randn(2, 600, model.config.hidden_size, generator=torch.Generator().manual_seed(8)).double()
    weights = torch.randn(2, 600, model.config.hidden_size, generator=torch.Generator().manual_seed(9)).double()
    width = model.config.hidden_size
    for gates, shares in (("half", (0.25, 0.5, 0.25)), ("constant", (0.0, 0.0, 1.0))):
        kept: dict[str, torch.Tensor] = {}
        handle = mixer.in_proj.register_forward_hook(functools.partial(_keep_output, kept))
        try:
            leaf = hidden.clone().requires_grad_()
            with mamba_lrp_rules(model, {MIXER[name]: MixerRule(conv_gate=ShortConvGateRule(gates))}):
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
    torch.testing.assert_close(out, _gated_norm_sigmoid(norm, y, z), atol=1e-14, rtol=0)
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
def test_prefill_cache_equals_the_models(name):
    """With a cache, the rules fill it as the model does (the short convolutions' and recurrences' states)."""
    model = build(name, seed=11, use_cache=True)
    embeds = embeds_of(model, 2, 7, seed=11)
    with torch.no_grad():
        original = model(inputs_embeds=embeds, use_cache=True)
        with mamba_lrp_rules(model):
            ruled = model(inputs_embeds=embeds, use_cache=True)
    torch.testing.assert_close(ruled.logits, original.logits, atol=1e-10, rtol=0)
    caches = [getattr(out, "cache", None) or out.past_key_values for out in (original, ruled)]
    reads = ("get_conv_state",) if name != "kimi_linear" else ("get_conv_state", "get_recurrent_state")
    for index, layer_type in enumerate(model.config.layer_types):
        if layer_type in ("conv", "linear_attention"):
            for read in reads:
                if hasattr(caches[0], read):
                    expected, got = (getattr(cache, read)(index) for cache in caches)
                else:  # before transformers 5.2x
                    field = "conv_states" if read == "get_conv_state" else "recurrent_states"
                    expected, got = (getattr(cache.layers[index], field)[0] for cache in caches)
                torch.testing.assert_close(got.to(expected.dtype), expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_plan_names_the_rules(name):
    model = build(name, seed=12)
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


@pytest.mark.parametrize("name", list(FAMILIES))
def test_relevance_split_by_layer_kind_equals_layer_mamba_lrp_per_module(name):
    model = build(name, seed=13)
    embeds = embeds_of(model, 2, 6, seed=13)
    rules = rules_for(name, "cp")
    rows = relevance_split(MambaLRP(model, rules=rules), embeds, target=3)
    operator = "linear_attention" if name == "kimi_linear" else "conv"
    expected = {
        "kimi_linear": [operator, "mlp", "attention", "moe", "mlp", operator, "moe", "mlp"],
        "lfm2": [operator, "mlp", "attention", "mlp", operator, "mlp"],
        "lfm2_moe": [operator, "mlp", "attention", "moe", operator, "moe"],
    }[name]
    assert [row.kind for row in rows] == expected
    modules = dict(model.named_modules())
    for row in rows:
        alone = LayerMambaLRP(model, modules[row.module], rules=rules).attribute(embeds, target=3)
        alone = alone[0] if isinstance(alone, tuple) else alone
        torch.testing.assert_close(row.relevance, alone.reshape(len(embeds), -1).sum(1), atol=1e-10, rtol=0)
        assert row.relevance.abs().min() > 1e-8  # every kind carries relevance


def test_gate_rule_options_and_ablation_names():
    with pytest.raises(ValueError, match="mode must be one of"):
        ShortConvGateRule("uniform")
    rule = MixerRule(conv_gate=ShortConvGateRule("half"))
    assert rule.without({"gate"}).conv_gate_rule is None  # the evaluation's "gate" ablation covers these gates
    assert rule.without({"ssm"}).conv_gate_rule is rule.conv_gate_rule
    assert "gates 'half'" in repr(rule.with_layout(LFM2.mixers[modeling_lfm2.Lfm2ShortConv]))
    assert ShortConvGateRule().mode == "half"  # the default chosen by benchmarks/lfm2_gate_choice.py
    assert LFM2.classifier is None and LFM2_MOE.classifier is None and KIMI_LINEAR.classifier is None
