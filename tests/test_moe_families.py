"""The experts rule and the mixture-of-experts families, Jamba (Mamba-1, attention, MoE) and Qwen3-MoE: what is
particular to them.

The shared family suite (``family_checks.py``) checks both families' forward with the rules
(eager and SDPA attention, eager and batched experts), their relevances against the loop-based
reference of ``reference_moe.py`` (the router written out, the tokens and their chosen experts
looped with the routing weights held constant, the SiLU identity rule and the half rule in each
expert) in both attention modes, conservation at every layer and right-padded batches; here: the
negative controls, the routers, the relevance split by layer kind, and the experts rule on every
layout transformers declares.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.activations import SiLUActivation
from transformers.integrations.moe import use_experts_implementation
from transformers.models.jamba import modeling_jamba
from transformers.models.qwen3_moe import modeling_qwen3_moe

from captum_mamba import LayerMambaLRP, MambaLRP, mamba_lrp_rules
from captum_mamba.rules import ExpertsRule, GradientRule

from conftest import FAMILIES
from family_checks import ids_of, lm_of, rules_for
from family_references import reference_relevance
from reference_moe import experts_loop

NAMES = ["jamba", "qwen3_moe"]
EXPERTS = {"jamba": modeling_jamba.JambaExperts, "qwen3_moe": modeling_qwen3_moe.Qwen3MoeExperts}

pytestmark = pytest.mark.usefixtures("float64_faithful_hf")


def build(name: str, seed: int = 0) -> nn.Module:
    return lm_of(FAMILIES[name], seed)


def embeds_of(model: nn.Module, batch: int, length: int, seed: int) -> torch.Tensor:
    return model.get_input_embeddings()(ids_of(batch, length, seed)).detach()


def cp_rules(name: str) -> dict:
    return rules_for(FAMILIES[name], "cp")


# --- the families ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_negative_controls(name):
    model = build(name, seed=4)
    embeds = embeds_of(model, 2, 6, seed=4)
    expected, logit = reference_relevance(name, model, embeds, target=1, mode="cp")
    leaf = embeds.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(model(inputs_embeds=leaf).logits[:, -1, 1].sum(), leaf)
    plain = (leaf * gradient).detach()
    assert ((plain.sum((1, 2)) - logit).abs() > 0.1 * logit.abs()).any()  # Gradient x Input misses the logit
    for experts_rule in (GradientRule(), ExpertsRule(gate=None)):  # no experts rule; no half rule in the experts
        rules = {**cp_rules(name), EXPERTS[name]: experts_rule}
        ablated = MambaLRP(model, rules=rules).attribute(embeds, target=1)
        assert (ablated - expected).abs().max() > 1e-4  # dropping the rule breaks the equality


@pytest.mark.parametrize("name", NAMES)
def test_routers_are_planned_and_feed_only_held_constant_weights(name):
    model = build(name, seed=5)
    embeds = embeds_of(model, 1, 5, seed=5)
    blocks = [module for module in model.modules() if hasattr(module, "experts")]
    routers = [block.router if hasattr(block, "router") else block.gate for block in blocks]
    plan = MambaLRP(model).rule_plan()
    names = {module: path for path, module in model.named_modules()}
    for block, router in zip(blocks, routers):
        assert type(plan.rules[names[block]]) is GradientRule and type(plan.rules[names[router]]) is GradientRule
        assert isinstance(plan.rules[names[block.experts]], ExpertsRule)
    reached: list[str] = []

    def record(module, inputs, outputs):
        for output in outputs if isinstance(outputs, tuple) else (outputs,):
            if output.requires_grad:
                output.register_hook(lambda gradient: reached.append(names[module]))

    handles = [router.register_forward_hook(record) for router in routers]
    try:
        MambaLRP(model, rules=cp_rules(name)).attribute(embeds, target=2)
        assert reached == []  # no relevance reaches a router
        MambaLRP(model, rules={**cp_rules(name), EXPERTS[name]: GradientRule()}).attribute(embeds, target=2)
        assert reached  # the hooks do see gradients where the weights are not held constant
    finally:
        for handle in handles:
            handle.remove()


def test_relevance_split_by_layer_kind_equals_layer_mamba_lrp_per_module():
    """Jamba's split: Mamba-1 mixers (ssm), the attention, the dense MLP and the experts (moe), one row each."""
    from captum_mamba import relevance_split

    model = build("jamba", seed=9)
    embeds = embeds_of(model, 2, 6, seed=9)
    rules = cp_rules("jamba")
    rows = relevance_split(MambaLRP(model, rules=rules), embeds, target=3)
    assert [(row.layer, row.kind) for row in rows] == [
        (0, "ssm"),
        (0, "moe"),
        (1, "attention"),
        (1, "mlp"),
        (2, "ssm"),
        (2, "moe"),
    ]
    assert [row.module for row in rows if row.kind == "moe"] == [
        "model.layers.0.feed_forward.experts",
        "model.layers.2.feed_forward.experts",
    ]
    modules = dict(model.named_modules())
    for row in rows:
        alone = LayerMambaLRP(model, modules[row.module], rules=rules).attribute(embeds, target=3)
        alone = alone[0] if isinstance(alone, tuple) else alone
        # the experts take the tokens flattened, (batch·length, hidden): their relevances summed per sequence
        torch.testing.assert_close(row.relevance, alone.reshape(len(embeds), -1).sum(1), atol=1e-10, rtol=0)
        assert row.relevance.abs().min() > 1e-6  # every kind carries relevance


# --- the experts rule on the layouts transformers declares ------------------------------------------

LAYOUTS = {
    "concatenated": dict(),
    "transposed_with_bias": dict(is_transposed=True, has_bias=True),
    "interleaved": dict(is_concatenated=False),
    "no_gate": dict(has_gate=False, has_bias=True),
}


def _experts_class(**flags) -> type[nn.Module]:
    """A stand-alone experts module with the layout ``flags`` (its forward only ever dispatches)."""

    class Experts(nn.Module):
        def __init__(self, config: PretrainedConfig) -> None:
            super().__init__()
            experts, hidden, inner = 3, 6, 5
            gated = flags.get("has_gate", True)
            width = 2 * inner if gated else inner
            transposed = flags.get("is_transposed", False)
            self.num_experts = experts
            up_name = "gate_up_proj" if gated else "up_proj"
            up_shape, down_shape = (
                ((hidden, width), (inner, hidden)) if transposed else ((width, hidden), (hidden, inner))
            )
            setattr(self, up_name, nn.Parameter(torch.randn(experts, *up_shape, dtype=torch.float64)))
            self.down_proj = nn.Parameter(torch.randn(experts, *down_shape, dtype=torch.float64))
            if flags.get("has_bias", False):
                setattr(self, f"{up_name}_bias", nn.Parameter(torch.randn(experts, width, dtype=torch.float64)))
                self.down_proj_bias = nn.Parameter(torch.randn(experts, hidden, dtype=torch.float64))
            self.act_fn = SiLUActivation()

        def forward(self, hidden_states, top_k_index, top_k_weights):
            raise AssertionError("the experts dispatch through the interface in this test")

    return use_experts_implementation(Experts, **flags)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_experts_rule_follows_the_layout_flags(layout):
    torch.manual_seed(7)
    config = PretrainedConfig()
    config._experts_implementation = "batched_mm"
    experts = _experts_class(**LAYOUTS[layout])(config).eval()
    x = torch.randn(5, 6, dtype=torch.float64)
    weights = torch.rand(5, 2, dtype=torch.float64, requires_grad=True)
    chosen = torch.tensor([[0, 2], [1, 0], [2, 1], [2, 0], [1, 2]])
    leaf = x.clone().requires_grad_()
    with mamba_lrp_rules(experts, overrides={type(experts): ExpertsRule()}):
        ruled = experts(leaf, chosen, weights)
    assert config._experts_implementation == "batched_mm"  # restored
    (gradient, weight_gradient) = torch.autograd.grad(ruled.sum(), (leaf, weights), allow_unused=True)
    assert weight_gradient is None  # the routing weights are held constant
    reference_leaf = x.clone().requires_grad_()
    expected = experts_loop(experts, reference_leaf, weights, chosen)
    (expected_gradient,) = torch.autograd.grad(expected.sum(), reference_leaf)
    torch.testing.assert_close(ruled, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(leaf * gradient, reference_leaf * expected_gradient, atol=1e-12, rtol=0)
    if layout != "interleaved":  # transformers' own batched_mm splits [gate; up] with the default gate
        with torch.no_grad():
            torch.testing.assert_close(ruled, experts(x, chosen, weights), atol=1e-12, rtol=0)


def test_experts_the_rule_does_not_cover_are_refused():
    class ClampedGate(_experts_class()):
        def _apply_gate(self, gate_up: torch.Tensor) -> torch.Tensor:
            gate, up = gate_up.chunk(2, dim=-1)
            return self.act_fn(gate.clamp(max=1.0)) * up

    config = PretrainedConfig()
    config._experts_implementation = "eager"
    x, chosen, weights = (
        torch.randn(2, 6, dtype=torch.float64),
        torch.tensor([[0, 1], [1, 2]]),
        torch.ones(2, 2).double(),
    )
    with pytest.raises(NotImplementedError, match="own _apply_gate"):
        ExpertsRule().module_forward(ClampedGate(config), x, chosen, weights)

    class Undecorated(nn.Module):
        def forward(self, hidden_states, top_k_index, top_k_weights):
            return hidden_states

    with pytest.raises(TypeError, match="experts interface"):
        ExpertsRule().module_forward(Undecorated(), x, chosen, weights)
