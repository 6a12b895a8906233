"""The Gated DeltaNet hybrids: Qwen3-Next, Qwen3.5, Qwen3.5-MoE and OLMo hybrid, on tiny float64 configurations.

The reference (``reference_gated_delta.py``, importing no package rule code) writes the Gated
DeltaNet out step by step (the recurrence as a loop over positions with ``α``, ``β``, ``k``, ``q``
detached), the gated attention with loops over heads and positions, and reuses the MLP and
experts loops of the attention and MoE references. transformers computes the delta rule, the
gated norms, OLMo's RMSNorms and, through ``Tensor.float()``, the decays and the zero-centred norms
in float32 even for float64 models; the fixture below removes those casts (the rule functions by
the reference's plain recurrence, the norms by cast-free forwards, ``float()`` keeping float64
inside the Gated DeltaNets' and the zero-centred norms' own forwards), so the model's own forward
can be compared at 1e-10.
"""

from __future__ import annotations

import functools
import math
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.olmo_hybrid import modeling_olmo_hybrid
from transformers.models.qwen3_5 import modeling_qwen3_5
from transformers.models.qwen3_5_moe import modeling_qwen3_5_moe
from transformers.models.qwen3_next import modeling_qwen3_next

from captum_mamba import LayerMambaLRP, MambaLRP, mamba_lrp_rules
from captum_mamba.families import OLMO_HYBRID, QWEN3_5, QWEN3_5_MOE, QWEN3_NEXT
from captum_mamba.rules import GatedRMSNormRule, GradientRule, MixerRule
from captum_mamba.rules.attention import AttentionRule

from conftest import _rms_norm_without_narrowing, randomise
from reference_gated_delta import float64_chunk_gated_delta_rule, reference, reference_logits

VOCAB = 40
FAMILIES = {family.name: family for family in (QWEN3_NEXT, QWEN3_5, QWEN3_5_MOE, OLMO_HYBRID)}
MODULES = {
    "qwen3_next": modeling_qwen3_next,
    "qwen3_5": modeling_qwen3_5,
    "qwen3_5_moe": modeling_qwen3_5_moe,
    "olmo_hybrid": modeling_olmo_hybrid,
}
PREFIX = {"qwen3_next": "Qwen3Next", "qwen3_5": "Qwen3_5", "qwen3_5_moe": "Qwen3_5Moe", "olmo_hybrid": "OlmoHybrid"}


def module_type(name: str, kind: str) -> type[nn.Module]:
    """A family's module class: ``kind`` is ``Attention``, ``GatedDeltaNet``, ``RMSNormGated``, ..."""
    return getattr(MODULES[name], PREFIX[name] + kind)


def _gated_norm_first(self, hidden_states, gate):
    """The Gated DeltaNets' output norm ``rmsnorm(o) · w · silu(z)`` without its float32 cast."""
    normed = hidden_states * torch.rsqrt(hidden_states.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
    return self.weight * normed * F.silu(gate)


@contextmanager
def _float_keeping_float64():
    """``Tensor.float()`` leaves float64 tensors as they are (only inside the wrapped forwards below)."""
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
    """transformers' float32 casts removed from the four families (see the module docstring)."""
    for name, module in MODULES.items():
        monkeypatch.setattr(module, "torch_chunk_gated_delta_rule", float64_chunk_gated_delta_rule)
        monkeypatch.setattr(module_type(name, "RMSNormGated"), "forward", _gated_norm_first)
        for kind in ("GatedDeltaNet", "RMSNorm"):  # the decays; the zero-centred norms (x.float(), w.float())
            original = module_type(name, kind).forward
            monkeypatch.setattr(module_type(name, kind), "forward", _without_float_casts(original))
    monkeypatch.setattr(modeling_olmo_hybrid.OlmoHybridRMSNorm, "forward", _rms_norm_without_narrowing)


def build(name: str, seed: int = 0, attention: str = "sdpa", **overrides) -> nn.Module:
    torch.manual_seed(seed)
    config = FAMILIES[name].config(**overrides)
    config._attn_implementation = attention
    model = randomise(FAMILIES[name].causal_lm(config), seed)
    with torch.no_grad():  # the stacked expert weights: scaled by their fan-in (the last dimension)
        generator = torch.Generator().manual_seed(seed + 100)
        for parameter in model.parameters():
            if parameter.dim() == 3:
                noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
                parameter.copy_(noise / math.sqrt(parameter.shape[-1]))
    return model.double().eval()


def ids_of(batch: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def embeds_of(model: nn.Module, batch: int, length: int, seed: int) -> torch.Tensor:
    return model.get_input_embeddings()(ids_of(batch, length, seed)).detach()


def rules_for(name: str, mode: str) -> dict:
    return {module_type(name, "Attention"): AttentionRule(mode)}


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
@pytest.mark.parametrize("name", list(FAMILIES))
def test_relevances_equal_the_step_by_step_reference(name, mode):
    model = build(name, seed=2)
    embeds = embeds_of(model, 2, 7, seed=2)
    expected, logit = reference(model, embeds, target=5, mode=mode)
    relevance, delta = MambaLRP(model, rules=rules_for(name, mode)).attribute(
        embeds, target=5, return_convergence_delta=True
    )
    torch.testing.assert_close(relevance, expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(delta, expected.sum((1, 2)) - logit, atol=1e-10, rtol=0)
    if mode == "cp":
        assert delta.abs().max() < 1e-10  # bias-free: the delta rule, the gates and CP-LRP conserve exactly
    else:
        assert delta.abs().max() > 1e-6  # the softmax rule is not conservative


@pytest.mark.parametrize("name", list(FAMILIES))
def test_cp_lrp_conserves_at_every_layer(name):
    model = build(name, seed=3)
    ids = ids_of(2, 7, seed=3)
    with torch.no_grad():  # the logit from the float64 reference forward, computed independently
        logit = reference_logits(model, model.get_input_embeddings()(ids), "cp")[:, 4]
    for layer in [model.get_input_embeddings(), *model.model.layers]:
        for to_input in (False, True):
            relevance = LayerMambaLRP(model, layer, rules=rules_for(name, "cp")).attribute(
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
    explainer = LayerMambaLRP(model, model.get_input_embeddings(), rules=rules_for(name, "attnlrp"))
    together = explainer.attribute(ids, target=[1, 2, 3], additional_forward_args=mask).sum(-1)
    for row, length in enumerate(lengths):
        alone = explainer.attribute(ids[row : row + 1, :length], target=row + 1).sum(-1)
        torch.testing.assert_close(together[row, :length], alone[0], atol=1e-10, rtol=0)
        assert torch.all(together[row, length:] == 0)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_negative_controls(name):
    model = build(name, seed=5)
    embeds = embeds_of(model, 2, 7, seed=5)
    expected, logit = reference(model, embeds, target=1, mode="cp")
    leaf = embeds.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(model(inputs_embeds=leaf).logits[:, -1, 1].sum(), leaf)
    plain = (leaf * gradient).detach()
    assert ((plain.sum((1, 2)) - logit).abs() > 0.1 * logit.abs()).any()  # Gradient x Input misses the logit
    mixer = module_type(name, "GatedDeltaNet")
    for ablation in (
        {mixer: MixerRule(delta=None)},  # the recurrence with q, k, α, β live
        {module_type(name, "RMSNormGated"): GatedRMSNormRule(gate=None, norm_before_gate=True)},
    ):
        ablated = MambaLRP(model, rules={**rules_for(name, "cp"), **ablation}).attribute(embeds, target=1)
        assert (ablated - expected).abs().max() > 1e-4  # dropping the rule breaks the equality
    # and the reference itself, with the recurrence's inputs live, is what the ablated rule gives
    x = embeds.clone().requires_grad_()
    (live,) = torch.autograd.grad(reference_logits(model, x, "cp", delta_rule=False)[:, 1].sum(), x)
    ablated = MambaLRP(model, rules={**rules_for(name, "cp"), mixer: MixerRule(delta=None)}).attribute(embeds, target=1)
    torch.testing.assert_close(ablated, (x * live).detach(), atol=1e-10, rtol=0)


def _projections_of_the_held_constant_path(name: str, mixer: nn.Module) -> list[nn.Module]:
    """The projections that only feed α and β (their outputs carry no relevance under the rule)."""
    if name == "qwen3_next":
        return [mixer.in_proj_ba]
    if name == "olmo_hybrid":
        return [mixer.a_proj, mixer.b_proj]
    return [mixer.in_proj_a, mixer.in_proj_b]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_relevance_flows_through_the_values_only(name):
    """No gradient reaches the projections of the decay and of β, nor the routers and shared-expert gates."""
    model = build(name, seed=6)
    embeds = embeds_of(model, 1, 6, seed=6)
    mixers = [m for m in model.modules() if isinstance(m, module_type(name, "GatedDeltaNet"))]
    watched = [p for m in mixers for p in _projections_of_the_held_constant_path(name, m)]
    watched += [m for m in model.modules() if hasattr(m, "shared_expert_gate")]
    watched = [getattr(m, "shared_expert_gate", m) for m in watched]
    watched += [m.gate for m in model.modules() if hasattr(m, "experts")]
    reached: list[nn.Module] = []

    def record(module, inputs, outputs):
        for output in outputs if isinstance(outputs, tuple) else (outputs,):
            if isinstance(output, torch.Tensor) and output.requires_grad:
                output.register_hook(lambda gradient: reached.append(module))

    handles = [module.register_forward_hook(record) for module in watched]
    try:
        MambaLRP(model, rules=rules_for(name, "cp")).attribute(embeds, target=2)
        assert reached == []
        plain = {mixer: MixerRule(delta=None) for mixer in {type(m) for m in mixers}}
        MambaLRP(model, rules={**rules_for(name, "cp"), **plain}).attribute(embeds, target=2)
        assert reached  # the hooks do see gradients where α and β are not held constant
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("name", ["qwen3_next", "qwen3_5"])
def test_sequence_classifiers_conserve_with_cp_lrp(name):
    """transformers' own classifiers (the last real token's linear score): relevances sum to the logit."""
    classifier = {
        "qwen3_next": modeling_qwen3_next.Qwen3NextForSequenceClassification,
        "qwen3_5": modeling_qwen3_5.Qwen3_5TextForSequenceClassification,
    }[name]
    torch.manual_seed(7)
    config = FAMILIES[name].config(num_labels=3, pad_token_id=0)
    model = randomise(classifier(config), 7)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 3:
                parameter.copy_(torch.randn(parameter.shape) / math.sqrt(parameter.shape[-1]))
    model = model.double().eval()
    ids = ids_of(2, 6, seed=7).clamp(min=1)  # no pad token inside
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, 2]
    relevance = LayerMambaLRP(model, model.get_input_embeddings(), rules=rules_for(name, "cp")).attribute(ids, target=2)
    torch.testing.assert_close(relevance.sum((1, 2)), logits, atol=1e-8, rtol=0)


def test_prefill_cache_equals_the_models():
    """With a cache, the rules fill it as the model does (the conv and recurrent states of each Gated DeltaNet)."""
    model = build("qwen3_next", seed=8, use_cache=True)
    embeds = embeds_of(model, 2, 7, seed=8)
    with torch.no_grad():
        original = model(inputs_embeds=embeds, use_cache=True)
        with mamba_lrp_rules(model):
            ruled = model(inputs_embeds=embeds, use_cache=True)
    torch.testing.assert_close(ruled.logits, original.logits, atol=1e-10, rtol=0)
    caches = [getattr(out, "cache", None) or out.past_key_values for out in (original, ruled)]
    for index, layer_type in enumerate(model.config.layer_types):
        if layer_type == "linear_attention":
            for read in ("get_conv_state", "get_recurrent_state"):
                expected, got = (
                    (getattr(cache, read)(index) for cache in caches)
                    if hasattr(caches[0], read)
                    else _states_before_5_2x(caches, index, read)
                )
                torch.testing.assert_close(got.to(expected.dtype), expected, atol=1e-10, rtol=0)


def _states_before_5_2x(caches, index: int, read: str):
    field = "conv_states" if read == "get_conv_state" else "recurrent_states"
    return tuple(getattr(cache.layers[index], field)[0] for cache in caches)


def test_plan_names_the_rules():
    model = build("qwen3_next", seed=9)
    plan = MambaLRP(model).rule_plan()
    kinds = {type(rule).__name__ for rule in plan.rules.values()}
    assert {"MixerRule", "AttentionRule", "ExpertsRule", "MoEBlockRule", "GatedRMSNormRule", "RMSNormRule"} <= kinds
    names = dict(model.named_modules())
    gdn = next(path for path, m in names.items() if isinstance(m, modeling_qwen3_next.Qwen3NextGatedDeltaNet))
    assert "Qwen3NextGatedDeltaLayout" in repr(plan.rules[gdn])
    assert isinstance(plan.rules[gdn + ".conv1d"], GradientRule)


def test_relevance_split_by_layer_kind_equals_layer_mamba_lrp_per_module():
    """Qwen3-Next's split: Gated DeltaNets (linear_attention), the attention, MLPs and experts, one row each."""
    from captum_mamba import relevance_split

    model = build("qwen3_next", seed=10)
    embeds = embeds_of(model, 2, 6, seed=10)
    rules = rules_for("qwen3_next", "cp")
    rows = relevance_split(MambaLRP(model, rules=rules), embeds, target=3)
    assert [(row.layer, row.kind) for row in rows] == [
        (0, "linear_attention"),
        (0, "mlp"),
        (1, "attention"),
        (1, "mlp"),  # the shared expert (its gate held constant) runs before the routed experts
        (1, "moe"),
        (2, "linear_attention"),
        (2, "mlp"),
        (3, "linear_attention"),
        (3, "mlp"),
        (3, "moe"),
    ]
    modules = dict(model.named_modules())
    for row in rows:
        alone = LayerMambaLRP(model, modules[row.module], rules=rules).attribute(embeds, target=3)
        alone = alone[0] if isinstance(alone, tuple) else alone
        torch.testing.assert_close(row.relevance, alone.reshape(len(embeds), -1).sum(1), atol=1e-10, rtol=0)
        assert row.relevance.abs().min() > 1e-6  # every kind carries relevance


def test_switching_off_the_ssm_component_switches_off_the_delta_rule():
    """The evaluation's ablations name "ssm": for a Gated DeltaNet that is the delta rule."""
    rule = MixerRule().without({"ssm"})
    assert rule.ssm_rule is None and rule.delta_rule is None
    assert MixerRule().without({"delta"}).ssm_rule is not None
