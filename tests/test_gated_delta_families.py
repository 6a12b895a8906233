"""The Gated DeltaNet hybrids (Qwen3-Next, Qwen3.5, Qwen3.5-MoE, OLMo hybrid): what the shared family suite does not check.

The shared suite (``family_checks.py``, ``test_family_suite.py``) checks these families as every
other: the forward with the rules equals the model's and the step-by-step reference's
(``reference_gated_delta.py``: the recurrence as a loop over positions with ``α``, ``β``, ``k``,
``q`` detached) in both attention implementations, relevances equal the reference's in both
attention modes, CP-LRP conserves at every layer, the biases' share, right-padded batches,
classifiers (transformers' own for Qwen3-Next and Qwen3.5, the package's for Qwen3.5-MoE and
OLMo hybrid), restoration and a sweep over random configurations (``random_config``). Here: the
negative controls (the delta rule and the gated norm's rules switched off), that no relevance
reaches the projections of ``α`` and ``β``, the routers and the shared experts' gates, Qwen3-Next's
prefill cache, rule plan and relevance split by layer kind, the package's classifiers of
Qwen3.5-MoE and OLMo hybrid as Hugging Face models, and the ablation names. transformers'
float32 casts are removed by the suite's fixture (``float64_faithful_hf``; ``faithful_float64.py``).
"""

from __future__ import annotations

import pytest
from torch import nn
from transformers.models.olmo_hybrid import modeling_olmo_hybrid
from transformers.models.qwen3_5 import modeling_qwen3_5
from transformers.models.qwen3_5_moe import modeling_qwen3_5_moe
from transformers.models.qwen3_next import modeling_qwen3_next

from captum_mamba import MambaLRP
from captum_mamba.families import OLMO_HYBRID, QWEN3_5, QWEN3_5_MOE, QWEN3_NEXT
from captum_mamba.rules import GatedRMSNormRule, GradientRule, MixerRule

from family_checks import ids_of, lm_of, rules_for
from linear_mixer_checks import (
    check_negative_controls,
    check_package_classifier,
    check_prefill_cache,
    check_relevance_split,
    gradients_reaching,
    routers_of,
)

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


@pytest.mark.parametrize("name", list(FAMILIES))
def test_negative_controls(name, float64_faithful_hf):
    """Switching off the delta rule (q, k, α, β live) or the gated norm's gate rule breaks the equality."""
    check_negative_controls(
        FAMILIES[name],
        ablations=[
            {module_type(name, "GatedDeltaNet"): MixerRule(delta=None)},  # the reference's delta_rule=False
            {module_type(name, "RMSNormGated"): GatedRMSNormRule(gate=None, norm_before_gate=True)},
        ],
        switched_off={"delta_rule": False},
    )


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
    family = FAMILIES[name]
    model = lm_of(family, seed=6)
    embeds = model.get_input_embeddings()(ids_of(1, 6, seed=6)).detach()
    mixers = [m for m in model.modules() if isinstance(m, module_type(name, "GatedDeltaNet"))]
    watched = [p for m in mixers for p in _projections_of_the_held_constant_path(name, m)]
    watched += [m.shared_expert_gate for m in model.modules() if hasattr(m, "shared_expert_gate")]
    watched += routers_of(model)
    with gradients_reaching(watched) as reached:
        MambaLRP(model, rules=rules_for(family, "cp")).attribute(embeds, target=2)
        assert reached == []
        plain = {module_type(name, "GatedDeltaNet"): MixerRule(delta=None)}
        MambaLRP(model, rules=rules_for(family, "cp", plain)).attribute(embeds, target=2)
        assert reached  # the hooks do see gradients where α and β are not held constant


def test_prefill_cache_equals_the_models(float64_faithful_hf):
    """With a cache, the rules fill it as the model does (the conv and recurrent states of each Gated DeltaNet)."""
    check_prefill_cache(QWEN3_NEXT, seed=8)


def test_plan_names_the_rules():
    model = lm_of(QWEN3_NEXT, seed=9)
    plan = MambaLRP(model).rule_plan()
    kinds = {type(rule).__name__ for rule in plan.rules.values()}
    assert {"MixerRule", "AttentionRule", "ExpertsRule", "MoEBlockRule", "GatedRMSNormRule", "RMSNormRule"} <= kinds
    names = dict(model.named_modules())
    gdn = next(path for path, m in names.items() if isinstance(m, modeling_qwen3_next.Qwen3NextGatedDeltaNet))
    assert "Qwen3NextGatedDeltaLayout" in repr(plan.rules[gdn])
    assert isinstance(plan.rules[gdn + ".conv1d"], GradientRule)


def test_relevance_split_by_layer_kind_equals_layer_mamba_lrp_per_module():
    """Qwen3-Next's split: Gated DeltaNets (linear_attention), the attention, MLPs and experts, one row each."""
    check_relevance_split(
        QWEN3_NEXT,
        rows=[
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
        ],
        seed=10,
        least=1e-6,
    )


@pytest.mark.parametrize("name", ["qwen3_5_moe", "olmo_hybrid"])
def test_package_classifier(name, tmp_path):
    """transformers ships no sequence classifier for Qwen3.5-MoE (text) or OLMo hybrid: the package's head is declared."""
    check_package_classifier(FAMILIES[name], tmp_path)


def test_switching_off_the_ssm_component_switches_off_the_delta_rule():
    """The evaluation's ablations name "ssm": for a Gated DeltaNet that is the delta rule."""
    rule = MixerRule().without({"ssm"})
    assert rule.ssm_rule is None and rule.delta_rule is None
    assert MixerRule().without({"delta"}).ssm_rule is not None
