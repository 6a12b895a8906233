"""The experts rule and the mixture-of-experts families: Jamba (Mamba-1, attention, MoE) and Qwen3-MoE.

The reference (``reference_moe.py``, importing no package rule code) writes the router out, loops
over the tokens and their chosen experts with the routing weights held constant, applies the
SiLU identity rule and the half rule in each expert, and reuses the attention reference (AttnLRP,
CP-LRP) and the Mamba-1 reference (with Jamba's weighted norms on dt, B, C).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from transformers import JambaConfig, JambaForCausalLM, PretrainedConfig, Qwen3MoeConfig, Qwen3MoeForCausalLM
from transformers.activations import SiLUActivation
from transformers.integrations.moe import use_experts_implementation
from transformers.models.jamba import modeling_jamba
from transformers.models.qwen3_moe import modeling_qwen3_moe

from captum_mamba import LayerMambaLRP, MambaLRP, mamba_lrp_rules
from captum_mamba.rules import ExpertsRule, GradientRule
from captum_mamba.rules.attention import AttentionRule

from conftest import _rms_norm_without_narrowing, _scan_without_narrowing, randomise
from reference_moe import experts_loop, reference, reference_logits

VOCAB = 40
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=16,
    intermediate_size=24,
    num_attention_heads=4,
    num_key_value_heads=2,
    num_experts=4,
    num_experts_per_tok=2,
    use_cache=False,
    tie_word_embeddings=False,
)
#: Jamba: Mamba-1 layers around one attention layer; experts in every other layer (0 and 2), a dense MLP between.
JAMBA_SIZES = dict(
    num_hidden_layers=3,
    attn_layer_period=3,
    attn_layer_offset=1,
    expert_layer_period=2,
    expert_layer_offset=0,
    mamba_d_state=8,
    mamba_d_conv=4,
    mamba_expand=2,
    mamba_dt_rank=4,
    mamba_conv_bias=False,
    mamba_proj_bias=False,
)
#: Qwen3-MoE: experts in every layer, the top-2 weights renormalised.
QWEN3_MOE_SIZES = dict(
    num_hidden_layers=2, head_dim=4, moe_intermediate_size=12, decoder_sparse_step=1, norm_topk_prob=True
)
MODELS = {
    "jamba": (JambaConfig, JambaForCausalLM, JAMBA_SIZES, modeling_jamba),
    "qwen3_moe": (Qwen3MoeConfig, Qwen3MoeForCausalLM, QWEN3_MOE_SIZES, modeling_qwen3_moe),
}
ATTENTION = {"jamba": modeling_jamba.JambaAttention, "qwen3_moe": modeling_qwen3_moe.Qwen3MoeAttention}
EXPERTS = {"jamba": modeling_jamba.JambaExperts, "qwen3_moe": modeling_qwen3_moe.Qwen3MoeExperts}


@pytest.fixture(autouse=True)
def faithful_float64(monkeypatch):
    """HF's RMSNorms and Jamba's PyTorch scan compute in float32: remove the casts, so float64 comparisons are exact."""
    for norm in (modeling_jamba.JambaRMSNorm, modeling_qwen3_moe.Qwen3MoeRMSNorm):
        monkeypatch.setattr(norm, "forward", _rms_norm_without_narrowing)
    monkeypatch.setattr(modeling_jamba, "mamba_selective_scan", _scan_without_narrowing)


def build(name: str, seed: int = 0, attention: str = "sdpa", experts: str = "eager") -> nn.Module:
    config_type, model_type, sizes, _ = MODELS[name]
    torch.manual_seed(seed)
    config = config_type(**{**COMMON, **sizes})
    config._attn_implementation = attention
    config._experts_implementation = experts  # transformers' default (grouped_mm) takes no float64
    model = randomise(model_type(config), seed)
    with torch.no_grad():  # the stacked expert weights: scaled by their fan-in (the last dimension), not the first
        generator = torch.Generator().manual_seed(seed + 100)
        for parameter in model.parameters():
            if parameter.dim() == 3:
                noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
                parameter.copy_(noise / math.sqrt(parameter.shape[-1]))
    return model.double().eval()


def embeds_of(model: nn.Module, batch: int, length: int, seed: int) -> torch.Tensor:
    ids = torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))
    return model.get_input_embeddings()(ids).detach()


def rules_for(name: str, mode: str) -> dict:
    return {ATTENTION[name]: AttentionRule(mode)}


# --- the families ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("attention", "experts"), [("sdpa", "eager"), ("sdpa", "batched_mm"), ("eager", "eager")])
@pytest.mark.parametrize("name", list(MODELS))
def test_forward_with_rules_equals_the_model_forward(name, attention, experts):
    model = build(name, seed=1, attention=attention, experts=experts)
    embeds = embeds_of(model, 2, 7, seed=1)
    with torch.no_grad():
        original = model(inputs_embeds=embeds).logits
        with mamba_lrp_rules(model):
            ruled = model(inputs_embeds=embeds).logits
        expected = reference_logits(model, embeds, "cp")
    # eager attention computes its softmax in float32 even for float64 models; the rules never narrow
    torch.testing.assert_close(ruled, original, atol=1e-10 if attention == "sdpa" else 1e-5, rtol=0)
    torch.testing.assert_close(ruled[:, -1], expected, atol=1e-10, rtol=0)
    assert (model.config._attn_implementation, model.config._experts_implementation) == (attention, experts)


@pytest.mark.parametrize("mode", ["attnlrp", "cp"])
@pytest.mark.parametrize("name", list(MODELS))
def test_relevances_equal_the_loop_based_reference(name, mode):
    model = build(name, seed=2)
    embeds = embeds_of(model, 2, 6, seed=2)
    expected, logit = reference(model, embeds, target=5, mode=mode)
    relevance, delta = MambaLRP(model, rules=rules_for(name, mode)).attribute(
        embeds, target=5, return_convergence_delta=True
    )
    torch.testing.assert_close(relevance, expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(delta, expected.sum((1, 2)) - logit, atol=1e-10, rtol=0)
    if mode == "cp":
        assert delta.abs().max() < 1e-10  # bias-free: CP-LRP with the experts rule conserves exactly
    else:
        assert delta.abs().max() > 1e-6  # the softmax rule is not conservative


@pytest.mark.parametrize("name", list(MODELS))
def test_cp_lrp_conserves_at_every_layer(name):
    model = build(name, seed=3)
    ids = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():  # the logit from the float64 reference forward, computed independently
        logit = reference_logits(model, model.get_input_embeddings()(ids), "cp")[:, 4]
    for layer in [model.get_input_embeddings(), *model.model.layers]:
        for to_input in (False, True):
            relevance = LayerMambaLRP(model, layer, rules=rules_for(name, "cp")).attribute(
                ids, target=4, attribute_to_layer_input=to_input and layer is not model.get_input_embeddings()
            )
            relevance = relevance[0] if isinstance(relevance, tuple) else relevance
            torch.testing.assert_close(relevance.sum((1, 2)), logit, atol=1e-8, rtol=0)


@pytest.mark.parametrize("name", list(MODELS))
def test_negative_controls(name):
    model = build(name, seed=4)
    embeds = embeds_of(model, 2, 6, seed=4)
    expected, logit = reference(model, embeds, target=1, mode="cp")
    leaf = embeds.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(model(inputs_embeds=leaf).logits[:, -1, 1].sum(), leaf)
    plain = (leaf * gradient).detach()
    assert ((plain.sum((1, 2)) - logit).abs() > 0.1 * logit.abs()).any()  # Gradient x Input misses the logit
    for experts_rule in (GradientRule(), ExpertsRule(gate=None)):  # no experts rule; no half rule in the experts
        rules = {**rules_for(name, "cp"), EXPERTS[name]: experts_rule}
        ablated = MambaLRP(model, rules=rules).attribute(embeds, target=1)
        assert (ablated - expected).abs().max() > 1e-4  # dropping the rule breaks the equality


@pytest.mark.parametrize("name", list(MODELS))
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
        MambaLRP(model, rules=rules_for(name, "cp")).attribute(embeds, target=2)
        assert reached == []  # no relevance reaches a router
        MambaLRP(model, rules={**rules_for(name, "cp"), EXPERTS[name]: GradientRule()}).attribute(embeds, target=2)
        assert reached  # the hooks do see gradients where the weights are not held constant
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("name", list(MODELS))
def test_right_padded_batch_equals_rows_alone(name):
    model = build(name, seed=6)
    ids = torch.randint(0, VOCAB, (3, 7), generator=torch.Generator().manual_seed(6))
    lengths = [7, 4, 2]
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    explainer = LayerMambaLRP(model, model.get_input_embeddings(), rules=rules_for(name, "attnlrp"))
    together = explainer.attribute(ids, target=[1, 2, 3], additional_forward_args=mask).sum(-1)
    for row, length in enumerate(lengths):
        alone = explainer.attribute(ids[row : row + 1, :length], target=row + 1).sum(-1)
        torch.testing.assert_close(together[row, :length], alone[0], atol=1e-10, rtol=0)
        assert torch.all(together[row, length:] == 0)


def test_relevance_split_by_layer_kind_equals_layer_mamba_lrp_per_module():
    """Jamba's split: Mamba-1 mixers (ssm), the attention, the dense MLP and the experts (moe), one row each."""
    from captum_mamba import relevance_split

    model = build("jamba", seed=9)
    embeds = embeds_of(model, 2, 6, seed=9)
    rules = rules_for("jamba", "cp")
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
