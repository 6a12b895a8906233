"""The nemotron_h and granitemoehybrid families on tiny float64 hybrids: Mamba-2, attention, MLP and MoE layers.

Nemotron-H: one Mamba-2 layer, one attention layer (no positional embedding), two squared-ReLU MLP
layers, each a residual block of its own. Granite 4.0 hybrid: a Mamba-2 layer and an attention
layer (rotary embeddings), each followed by the shared SwiGLU MLP, with µP multipliers that are
not one. Their mixture-of-experts variants (top-2 of a few experts): Nemotron-H with a ``moe``
layer in place of the first MLP layer (six squared-ReLU experts in two groups, the best group
chosen first, a correction bias on the choice, renormalised and scaled weights, a shared expert;
once more with latent projections around the experts), Granite with four SwiGLU experts beside
each shared MLP. The reference (``reference_hybrid.py``, with the experts loop of
``reference_moe.py``) is written from the rules' equations with loops and imports no package rule
code. transformers' default experts implementation (``grouped_mm``) takes no float64: the models
use ``eager`` or ``batched_mm``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import GraniteMoeHybridConfig, GraniteMoeHybridForCausalLM, NemotronHConfig, NemotronHForCausalLM
from transformers.activations import ReLUSquaredActivation
from transformers.models.granitemoehybrid import modeling_granitemoehybrid
from transformers.models.nemotron_h import modeling_nemotron_h

from captum_mamba import LayerMambaLRP, MambaLRP, mamba_lrp_rules
from captum_mamba.rules import ExpertsRule, GradientRule, MLPRule, SiLUIdentityRule, SquaredReLUIdentityRule
from captum_mamba.rules.attention import AttentionRule

from conftest import _gated_rms_norm_without_narrowing, _rms_norm_without_narrowing, _ssd_without_narrowing, randomise
from reference_hybrid import reference, reference_logits

VOCAB = 40
ATTENTION = dict(num_attention_heads=4, num_key_value_heads=2, head_dim=4)
#: Nemotron-H's hybrid pattern: Mamba-2, MLP, attention, MLP (two groups, so the gated norm is grouped).
NEMOTRON_H_SIZES = dict(
    layers_block_type=["linear_attention", "mlp", "full_attention", "mlp"],
    intermediate_size=24,
    mlp_hidden_act="relu2",
    mamba_num_heads=4,
    mamba_head_dim=8,
    n_groups=2,
    ssm_state_size=8,
    conv_kernel=4,
    chunk_size=16,
    use_conv_bias=False,
    **ATTENTION,
)
#: Granite 4.0 hybrid: a Mamba-2 layer and an attention layer, shared MLPs, dense (no experts), µP multipliers.
GRANITE_SIZES = dict(
    num_hidden_layers=2,
    layer_types=["linear_attention", "full_attention"],
    shared_intermediate_size=24,
    num_local_experts=0,
    position_embedding_type="rope",
    mamba_n_heads=4,
    mamba_d_head=8,
    mamba_n_groups=2,
    mamba_d_state=8,
    mamba_chunk_size=16,
    mamba_conv_bias=False,
    embedding_multiplier=1.7,
    residual_multiplier=0.6,
    attention_multiplier=0.35,  # the attention scaling, instead of 1/sqrt(head_dim) = 0.5
    logits_scaling=2.5,
    num_attention_heads=4,
    num_key_value_heads=2,
)
#: Nemotron-H with experts: the first MLP layer a mixture of six experts in two groups (the best group, then its top 2).
NEMOTRON_H_MOE_SIZES = dict(
    NEMOTRON_H_SIZES,
    layers_block_type=["linear_attention", "moe", "full_attention", "mlp"],
    n_routed_experts=6,
    num_experts_per_tok=2,
    n_group=2,
    topk_group=1,
    norm_topk_prob=True,
    routed_scaling_factor=1.5,
    moe_intermediate_size=12,
    moe_shared_expert_intermediate_size=10,
)
#: Granite with four SwiGLU experts (top 2) beside each shared MLP.
GRANITE_MOE_SIZES = dict(GRANITE_SIZES, num_local_experts=4, num_experts_per_tok=2, intermediate_size=12)
_NEMOTRON_H = (NemotronHConfig, NemotronHForCausalLM)
_GRANITE = (GraniteMoeHybridConfig, GraniteMoeHybridForCausalLM)
MODELS = {
    "nemotron_h": (*_NEMOTRON_H, NEMOTRON_H_SIZES, modeling_nemotron_h.NemotronHAttention),
    "granitemoehybrid": (*_GRANITE, GRANITE_SIZES, modeling_granitemoehybrid.GraniteMoeHybridAttention),
    "nemotron_h_moe": (*_NEMOTRON_H, NEMOTRON_H_MOE_SIZES, modeling_nemotron_h.NemotronHAttention),
    "nemotron_h_moe_latent": (
        *_NEMOTRON_H,
        dict(NEMOTRON_H_MOE_SIZES, moe_latent_size=8),  # the experts work in 8 dimensions, between fc1 and fc2
        modeling_nemotron_h.NemotronHAttention,
    ),
    "granitemoehybrid_moe": (*_GRANITE, GRANITE_MOE_SIZES, modeling_granitemoehybrid.GraniteMoeHybridAttention),
}
MOE = [name for name in MODELS if "_moe" in name]
EXPERTS = {
    "nemotron_h": modeling_nemotron_h.NemotronHExperts,
    "granitemoehybrid": modeling_granitemoehybrid.GraniteMoeHybridExperts,
}


def build(name: str, seed: int = 0, implementation: str = "sdpa", experts: str = "eager") -> torch.nn.Module:
    config_type, model_type, sizes, _ = MODELS[name]
    torch.manual_seed(seed)
    config = config_type(vocab_size=VOCAB, hidden_size=16, use_cache=False, tie_word_embeddings=False, **sizes)
    config._attn_implementation = implementation
    config._experts_implementation = experts  # transformers' default (grouped_mm) takes no float64
    # float32 weights (as the mixers keep their SSM parameters) of order one, then float64 arithmetic
    model = randomise(model_type(config), seed)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed + 100)
        for parameter in model.parameters():
            if parameter.dim() == 3:  # the stacked expert weights: scaled by their fan-in (the last dimension)
                noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
                parameter.copy_(noise / math.sqrt(parameter.shape[-1]))
        for buffer_name, buffer in model.named_buffers():
            if buffer_name.endswith("e_score_correction_bias"):  # Nemotron-H's choice bias (zero at init)
                buffer.copy_(0.1 * torch.randn(buffer.shape, generator=generator, dtype=buffer.dtype))
    return model.double().eval()


def family(name: str) -> str:
    return name.split("_moe")[0]


def embeds_of(model: torch.nn.Module, batch: int, length: int, seed: int) -> torch.Tensor:
    ids = torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))
    return model.get_input_embeddings()(ids).detach()


def float64_logits(model: torch.nn.Module, embeds: torch.Tensor) -> torch.Tensor:
    """The causal LM's logits without Nemotron-H's final ``.float()`` (its backbone and head, as it composes them)."""
    hidden = model.model(inputs_embeds=embeds).last_hidden_state
    return model.lm_head(hidden) / getattr(model.config, "logits_scaling", 1.0)


def without_narrowing(monkeypatch: pytest.MonkeyPatch, model: torch.nn.Module) -> None:
    """HF's RMSNorms, gated norms and PyTorch Mamba-2 scans compute in float32: swap in cast-free versions."""
    for module in (modeling_nemotron_h, modeling_granitemoehybrid):
        monkeypatch.setattr(module, "mamba2_chunk_scan", _ssd_without_narrowing)
    for norm in (modeling_nemotron_h.NemotronHRMSNorm, modeling_granitemoehybrid.GraniteMoeHybridRMSNorm):
        monkeypatch.setattr(norm, "forward", _rms_norm_without_narrowing)
    # the mixers' gated norms (Nemotron-H's is Zamba2's class before transformers 5.2x)
    for norm in {type(module.norm) for module in model.modules() if hasattr(module, "A_log")}:
        monkeypatch.setattr(norm, "forward", _gated_rms_norm_without_narrowing)


def _explainer(name: str, model: torch.nn.Module, mode: str, **kwargs) -> MambaLRP:
    return MambaLRP(model, rules={MODELS[name][3]: AttentionRule(mode)}, **kwargs)


# --- the tests ----------------------------------------------------------------------------------


FORWARD_CASES = [
    (name, implementation, "eager") for name in MODELS if name not in MOE for implementation in ("eager", "sdpa")
]
FORWARD_CASES += [
    (name, *implementations)
    for name in MOE
    for implementations in (("sdpa", "eager"), ("sdpa", "batched_mm"), ("eager", "eager"))
]


@pytest.mark.parametrize(("name", "implementation", "experts"), FORWARD_CASES)
def test_forward_with_rules_equals_the_model_forward(name, implementation, experts, monkeypatch):
    model = build(name, seed=1, implementation=implementation, experts=experts)
    embeds = embeds_of(model, 2, 7, seed=1)
    with torch.no_grad():
        narrowed = float64_logits(model, embeds)  # HF as it is: norms and scans in float32
        with mamba_lrp_rules(model):
            ruled = float64_logits(model, embeds)
            assert ruled.dtype == torch.float64
        without_narrowing(monkeypatch, model)
        original = float64_logits(model, embeds)
        expected = reference_logits(model, embeds, "cp")
    torch.testing.assert_close(ruled, narrowed, atol=1e-5, rtol=0)
    # the rules never narrow: they equal HF without its float32 casts (eager attention still takes
    # its softmax in float32; Nemotron-H's eager experts sum their outputs in the float32 of the
    # routing weights) and the float64 reference
    hf_narrows = implementation == "eager" or (name.startswith("nemotron_h_moe") and experts == "eager")
    torch.testing.assert_close(ruled, original, atol=1e-5 if hf_narrows else 1e-10, rtol=0)
    torch.testing.assert_close(ruled[:, -1], expected, atol=1e-10, rtol=0)
    # restored
    assert (model.config._attn_implementation, model.config._experts_implementation) == (implementation, experts)


def test_the_attention_multiplier_is_the_attention_scaling():
    """Granite's attention_multiplier reaches the rules' attention as its scaling (not 1/sqrt(head_dim))."""
    model = build("granitemoehybrid", seed=1)
    embeds = embeds_of(model, 1, 6, seed=1)
    attention = model.model.layers[1].self_attn
    assert attention.scaling == 0.35 != attention.head_dim**-0.5
    with torch.no_grad():
        expected = reference_logits(model, embeds, "attnlrp")
        with mamba_lrp_rules(model):
            ruled = float64_logits(model, embeds)[:, -1]
            attention.scaling = attention.head_dim**-0.5  # the default scaling: a different model
            default_scaling = float64_logits(model, embeds)[:, -1]
    torch.testing.assert_close(ruled, expected, atol=1e-10, rtol=0)
    assert (default_scaling - expected).abs().max() > 1e-4


@pytest.mark.parametrize("mode", ["attnlrp", "cp"])
@pytest.mark.parametrize("name", list(MODELS))
def test_relevances_equal_the_loop_based_reference(name, mode):
    model = build(name, seed=2)
    embeds = embeds_of(model, 2, 6, seed=2)
    expected, logit = reference(model, embeds, target=5, mode=mode)
    relevance, delta = _explainer(name, model, mode).attribute(embeds, target=5, return_convergence_delta=True)
    torch.testing.assert_close(relevance, expected, atol=1e-10, rtol=0)
    # the delta equals the one the reference computes (Nemotron-H's narrowed logits are widened back)
    torch.testing.assert_close(delta, expected.sum((1, 2)) - logit, atol=1e-10, rtol=0)
    if mode == "cp":
        assert delta.abs().max() < 1e-10  # CP-LRP conserves on these bias-free models
    else:
        assert delta.abs().max() > 1e-6  # the softmax rule is not conservative


@pytest.mark.parametrize("name", list(MODELS))
def test_cp_lrp_conserves_at_every_layer(name):
    model = build(name, seed=3)
    ids = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(3))
    embedding = model.get_input_embeddings()
    with torch.no_grad():  # the logit from the float64 reference forward, computed independently
        logit = reference_logits(model, embedding(ids), "cp")[:, 4]
    rules = {MODELS[name][3]: AttentionRule("cp")}
    for layer in [embedding, *model.model.layers]:
        for to_input in (False, True) if layer is not embedding else (False,):
            relevance = LayerMambaLRP(model, layer, rules=rules).attribute(
                ids, target=4, attribute_to_layer_input=to_input
            )
            relevance = relevance[0] if isinstance(relevance, tuple) else relevance
            torch.testing.assert_close(relevance.sum((1, 2)), logit, atol=1e-8, rtol=0)


@pytest.mark.parametrize("name", list(MODELS))
def test_negative_controls(name):
    model = build(name, seed=4)
    embeds = embeds_of(model, 2, 6, seed=4)
    expected, logit = reference(model, embeds, target=1, mode="attnlrp")
    leaf = embeds.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(float64_logits(model, leaf)[:, -1, 1].sum(), leaf)
    plain = (leaf * gradient).detach()
    assert ((plain.sum((1, 2)) - logit).abs() > 0.1 * logit.abs()).any()  # Gradient x Input misses the logit
    without_attention_rule = MambaLRP(model, rules={MODELS[name][3]: GradientRule()}).attribute(embeds, target=1)
    assert (without_attention_rule - expected).abs().max() > 1e-4  # dropping the rule breaks the equality
    if name in MOE:  # no experts rule (the routing weights not held constant); no half rule in the SwiGLU experts
        ablations = [GradientRule()] + ([ExpertsRule(gate=None)] if family(name) == "granitemoehybrid" else [])
        for experts_rule in ablations:
            rules = {MODELS[name][3]: AttentionRule("attnlrp"), EXPERTS[family(name)]: experts_rule}
            ablated = MambaLRP(model, rules=rules).attribute(embeds, target=1)
            assert (ablated - expected).abs().max() > 1e-4


@pytest.mark.parametrize("name", MOE)
def test_moe_layers_are_declared(name):
    """Every module of the MoE models has a rule: the experts the experts rule, the wrappers and routers LRP-0."""
    model = build(name)
    plan = MambaLRP(model).rule_plan()
    assert not plan.unsupported and not plan.fallbacks
    wrappers = [path for path, module in model.named_modules() if hasattr(module, "experts")]
    assert len(wrappers) == (1 if family(name) == "nemotron_h" else 2)  # Nemotron-H's moe layer; each Granite layer
    for path in wrappers:
        router = "gate" if family(name) == "nemotron_h" else "router"
        assert isinstance(plan.rules[f"{path}.experts"], ExpertsRule)
        assert type(plan.rules[path]) is GradientRule and type(plan.rules[f"{path}.{router}"]) is GradientRule
        activation = SquaredReLUIdentityRule if family(name) == "nemotron_h" else SiLUIdentityRule
        assert isinstance(plan.rules[f"{path}.experts.act_fn"], activation)  # the experts' activation's own rule


def test_the_squared_relu_rule_is_what_conserves_nemotron_h_mlps():
    model = build("nemotron_h", seed=4)
    embeds = embeds_of(model, 2, 6, seed=4)
    cp = {MODELS["nemotron_h"][3]: AttentionRule("cp")}
    _, delta = MambaLRP(model, rules=cp).attribute(embeds, target=2, return_convergence_delta=True)
    assert delta.abs().max() < 1e-10
    plain_square = {**cp, ReLUSquaredActivation: GradientRule()}  # gradient 2·relu(x): relevance doubled
    _, delta = MambaLRP(model, rules=plain_square).attribute(embeds, target=2, return_convergence_delta=True)
    assert delta.abs().max() > 1e-3
    # the rule given to MLPRule itself, applied to the activation's input: the same relevances
    as_module = MambaLRP(model, rules=cp).attribute(embeds, target=2)
    given = {**cp, modeling_nemotron_h.NemotronHMLP: MLPRule(activation=SquaredReLUIdentityRule())}
    torch.testing.assert_close(MambaLRP(model, rules=given).attribute(embeds, target=2), as_module, atol=0, rtol=0)


def test_squared_relu_rule_passes_relevance_element_wise():
    x = torch.tensor([-1.5, -0.0, 0.0, 0.3, 2.0], dtype=torch.float64, requires_grad=True)
    out = SquaredReLUIdentityRule().apply(x)
    assert torch.equal(out, torch.square(F.relu(x)))
    (gradient,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(gradient, F.relu(x).detach())  # that of x·[relu(x)]const
    torch.testing.assert_close(x.detach() * gradient, out.detach(), atol=0, rtol=0)  # R_in = R_out


@pytest.mark.parametrize("name", list(MODELS))
def test_right_padded_batch_equals_rows_alone(name):
    model = build(name, seed=5)
    ids = torch.randint(0, VOCAB, (3, 7), generator=torch.Generator().manual_seed(5))
    lengths = [7, 4, 2]
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    rules = {MODELS[name][3]: AttentionRule("attnlrp")}
    explainer = LayerMambaLRP(model, model.get_input_embeddings(), rules=rules)
    together = explainer.attribute(ids, target=[1, 2, 3], additional_forward_args=mask).sum(-1)
    # the models route in float32, and PyTorch's vectorised float32 sigmoid / softmax may round a
    # token's routing weights one ulp apart in a batch and alone (HF's forward as much as the rules')
    tolerance = 1e-6 if name in MOE else 1e-10
    for row, length in enumerate(lengths):
        alone = explainer.attribute(ids[row : row + 1, :length], target=row + 1).sum(-1)
        torch.testing.assert_close(together[row, :length], alone[0], atol=tolerance, rtol=0)
        assert torch.all(together[row, length:] == 0)


@pytest.mark.parametrize("pooling", ["mean", "last"])
@pytest.mark.parametrize("name", ["nemotron_h", "granitemoehybrid"])
def test_sequence_classifiers_conserve(name, pooling, monkeypatch):
    from captum_mamba.heads import GraniteMoeHybridForSequenceClassification, NemotronHForSequenceClassification

    classifier = {
        "nemotron_h": NemotronHForSequenceClassification,
        "granitemoehybrid": GraniteMoeHybridForSequenceClassification,
    }
    config_type, _, sizes, attention = MODELS[name]
    torch.manual_seed(10)
    config = config_type(vocab_size=VOCAB, hidden_size=16, use_cache=False, num_labels=3, **sizes)
    config.pooling, config.classifier_bias = pooling, True
    config._attn_implementation = "sdpa"
    model = randomise(classifier[name](config), 10).double().eval()
    without_narrowing(monkeypatch, model)
    embeds = embeds_of(model, 2, 6, seed=10)
    with torch.no_grad():
        logits = model(inputs_embeds=embeds).logits
    relevance, delta = MambaLRP(model, rules={attention: AttentionRule("cp")}).attribute(
        embeds, target=1, return_convergence_delta=True
    )
    bias = model.score.bias.detach()[1]
    torch.testing.assert_close(relevance.sum((1, 2)) + bias, logits[:, 1], atol=1e-10, rtol=0)
    torch.testing.assert_close(delta, -bias.expand(2), atol=1e-10, rtol=0)
