"""The nemotron_h and granitemoehybrid families: what is particular to them.

Nemotron-H: Mamba-2, attention (no positional embedding), squared-ReLU MLP and mixture-of-experts
layers, each a residual block of its own. Granite 4.0 hybrid: Mamba-2 and attention layers
(rotary embeddings), each followed by the shared SwiGLU MLP (and experts beside it), with µP
multipliers. The shared family suite (``family_checks.py``) checks both families and their
mixture-of-experts variants (``family_references.py``: Nemotron-H with a ``moe`` layer of six
squared-ReLU experts in two groups, also with latent projections; Granite with four SwiGLU
experts) against the loop-based reference of ``reference_hybrid.py`` in both attention modes,
the forward with the rules (eager and SDPA attention, eager and batched experts), conservation
at every layer, padded batches and the sequence classifiers; here: the attention multiplier as
the attention scaling, the negative controls, the experts' declarations and the squared-ReLU rule.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers.activations import ReLUSquaredActivation
from transformers.models.granitemoehybrid import modeling_granitemoehybrid
from transformers.models.nemotron_h import modeling_nemotron_h

from captum_mamba import MambaLRP, mamba_lrp_rules
from captum_mamba.rules import ExpertsRule, GradientRule, MLPRule, SiLUIdentityRule, SquaredReLUIdentityRule

from conftest import FAMILIES
from family_checks import attention_types, head_logits, ids_of, lm_of, plain_logits, rules_for
from family_references import REFERENCES, reference_of, reference_relevance

#: The families and their mixture-of-experts variants: name -> (family, overrides).
MODELS = {
    "nemotron_h": ("nemotron_h", {}),
    "granitemoehybrid": ("granitemoehybrid", {}),
    **{
        f"{name}_{variant}": (name, overrides)
        for name in ("nemotron_h", "granitemoehybrid")
        for variant, overrides in REFERENCES[name].variants.items()
    },
}
MOE = [name for name in MODELS if "_moe" in name]
EXPERTS = {
    "nemotron_h": modeling_nemotron_h.NemotronHExperts,
    "granitemoehybrid": modeling_granitemoehybrid.GraniteMoeHybridExperts,
}

pytestmark = pytest.mark.usefixtures("float64_faithful_hf")


def build(name: str, seed: int = 0) -> torch.nn.Module:
    family, overrides = MODELS[name]
    return lm_of(FAMILIES[family], seed, **overrides)


def embeds_of(model: torch.nn.Module, batch: int, length: int, seed: int) -> torch.Tensor:
    return model.get_input_embeddings()(ids_of(batch, length, seed)).detach()


def test_the_attention_multiplier_is_the_attention_scaling():
    """Granite's attention_multiplier reaches the rules' attention as its scaling (not 1/sqrt(head_dim))."""
    family = FAMILIES["granitemoehybrid"]
    model = build("granitemoehybrid", seed=1)
    embeds = embeds_of(model, 1, 6, seed=1)
    attention = model.model.layers[1].self_attn
    assert attention.scaling == 0.35 != attention.head_dim**-0.5
    with torch.no_grad():
        expected = reference_of("granitemoehybrid").logits(model, embeds, "attnlrp")
        with mamba_lrp_rules(model):
            ruled = head_logits(family, model, inputs_embeds=embeds)
            attention.scaling = attention.head_dim**-0.5  # the default scaling: a different model
            default_scaling = head_logits(family, model, inputs_embeds=embeds)
    torch.testing.assert_close(ruled, expected, atol=1e-10, rtol=0)
    assert (default_scaling - expected).abs().max() > 1e-4


@pytest.mark.parametrize("name", list(MODELS))
def test_negative_controls(name):
    family = FAMILIES[MODELS[name][0]]
    model = build(name, seed=4)
    embeds = embeds_of(model, 2, 6, seed=4)
    expected, logit = reference_relevance(family.name, model, embeds, target=1, mode="attnlrp")
    leaf = embeds.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(head_logits(family, model, inputs_embeds=leaf)[:, 1].sum(), leaf)
    plain = (leaf * gradient).detach()
    assert ((plain.sum((1, 2)) - logit).abs() > 0.1 * logit.abs()).any()  # Gradient x Input misses the logit
    without_rule = {kind: GradientRule() for kind in attention_types(family)}
    without_attention_rule = MambaLRP(model, rules=without_rule).attribute(embeds, target=1)
    assert (without_attention_rule - expected).abs().max() > 1e-4  # dropping the rule breaks the equality
    if name in MOE:  # no experts rule (the routing weights not held constant); no half rule in the SwiGLU experts
        ablations = [GradientRule()] + ([ExpertsRule(gate=None)] if family.name == "granitemoehybrid" else [])
        for experts_rule in ablations:
            rules = {**rules_for(family, "attnlrp"), EXPERTS[family.name]: experts_rule}
            ablated = MambaLRP(model, rules=rules).attribute(embeds, target=1)
            assert (ablated - expected).abs().max() > 1e-4


@pytest.mark.parametrize("name", MOE)
def test_moe_layers_are_declared(name):
    """Every module of the MoE models has a rule: the experts the experts rule, the wrappers and routers LRP-0."""
    family = MODELS[name][0]
    model = build(name)
    plan = MambaLRP(model).rule_plan()
    assert not plan.unsupported and not plan.fallbacks
    wrappers = [path for path, module in model.named_modules() if hasattr(module, "experts")]
    assert len(wrappers) == (1 if family == "nemotron_h" else 2)  # Nemotron-H's moe layer; each Granite layer
    for path in wrappers:
        router = "gate" if family == "nemotron_h" else "router"
        assert isinstance(plan.rules[f"{path}.experts"], ExpertsRule)
        assert type(plan.rules[path]) is GradientRule and type(plan.rules[f"{path}.{router}"]) is GradientRule
        activation = SquaredReLUIdentityRule if family == "nemotron_h" else SiLUIdentityRule
        assert isinstance(plan.rules[f"{path}.experts.act_fn"], activation)  # the experts' activation's own rule


def test_the_squared_relu_rule_is_what_conserves_nemotron_h_mlps():
    model = build("nemotron_h", seed=4)
    embeds = embeds_of(model, 2, 6, seed=4)
    cp = rules_for(FAMILIES["nemotron_h"], "cp")
    _, delta = MambaLRP(model, rules=cp).attribute(embeds, target=2, return_convergence_delta=True)
    assert delta.abs().max() < 1e-10
    plain_square = {**cp, ReLUSquaredActivation: GradientRule()}  # gradient 2·relu(x): relevance doubled
    _, delta = MambaLRP(model, rules=plain_square).attribute(embeds, target=2, return_convergence_delta=True)
    assert delta.abs().max() > 1e-3
    # the rule given to MLPRule itself, applied to the activation's input: the same relevances
    as_module = MambaLRP(model, rules=cp).attribute(embeds, target=2)
    given = {**cp, modeling_nemotron_h.NemotronHMLP: MLPRule(activation=SquaredReLUIdentityRule())}
    torch.testing.assert_close(MambaLRP(model, rules=given).attribute(embeds, target=2), as_module, atol=0, rtol=0)
    # and the relevances sum to the model's own logit
    logit = plain_logits(FAMILIES["nemotron_h"], model, inputs_embeds=embeds)[:, 2]
    torch.testing.assert_close(as_module.sum((1, 2)), logit, atol=1e-10, rtol=0)


def test_squared_relu_rule_passes_relevance_element_wise():
    x = torch.tensor([-1.5, -0.0, 0.0, 0.3, 2.0], dtype=torch.float64, requires_grad=True)
    out = SquaredReLUIdentityRule().apply(x)
    assert torch.equal(out, torch.square(F.relu(x)))
    (gradient,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(gradient, F.relu(x).detach())  # that of x·[relu(x)]const
    torch.testing.assert_close(x.detach() * gradient, out.detach(), atol=0, rtol=0)  # R_in = R_out
