"""The falcon_h1, zamba and zamba2 families on tiny float64 models, against a loop-based reference.

The reference (``reference_fz.py``) is written from the rules' equations and shares no package
code: it reuses the loop references of the Mamba-1 / Mamba-2 mixers and of attention, and writes
each family's layer structure (Falcon-H1's parallel branches with their µP multipliers, Zamba's
shared block on the concatenation of the hidden state and the input embeddings).

Hugging Face computes the scans and norms of these models in float32 even for float64 models; a
fixture swaps in cast-free versions of exactly those functions, so the rules' forward equals the
model's to 1e-10 (and the float64 reference's, which never narrows).

Checked for each family: forward and prefill cache equal the model's; AttnLRP and CP-LRP equal the
reference to 1e-10 (Falcon-H1's three gated-norm variants, Zamba's conv biases); CP-LRP conserves
at every layer; the embeddings collect relevance through both of Zamba's paths; Gradient x Input
misses the logit and dropping the attention rule breaks the equality; a right-padded batch equals
its rows alone; Zamba's sequence classifiers conserve.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    FalconH1Config,
    FalconH1ForCausalLM,
    Zamba2Config,
    Zamba2ForCausalLM,
    Zamba2ForSequenceClassification,
    ZambaConfig,
    ZambaForCausalLM,
    ZambaForSequenceClassification,
)
from transformers.models.falcon_h1 import modeling_falcon_h1
from transformers.models.zamba import modeling_zamba
from transformers.models.zamba2 import modeling_zamba2

from captum_mamba import LayerMambaLRP, MambaLRP, mamba_lrp_rules
from captum_mamba.families import FAMILIES
from captum_mamba.rules import GradientRule
from captum_mamba.rules.attention import AttentionRule

from conftest import (
    _gated_rms_norm_without_narrowing,
    _rms_norm_without_narrowing,
    _scan_without_narrowing,
    _ssd_without_narrowing,
    cached_states,
    randomise,
)
from reference_fz import reference, reference_logits

VOCAB = 40
LAYERS = ["linear_attention", "hybrid", "linear_attention", "hybrid"]  # two uses of the shared block
#: Falcon-H1 with every µP multiplier away from one and a grouped norm (checkpoints: norm after the gate).
FALCON_H1 = dict(
    hidden_size=16,
    intermediate_size=24,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=4,
    mamba_d_ssm=16,
    mamba_n_heads=4,
    mamba_d_head=4,
    mamba_n_groups=2,
    mamba_d_state=4,
    mamba_d_conv=4,
    mamba_chunk_size=4,
    mamba_conv_bias=False,
    mamba_proj_bias=False,
    mamba_rms_norm=True,
    mamba_norm_before_gate=False,
    attention_in_multiplier=0.7,
    attention_out_multiplier=1.3,
    key_multiplier=0.9,
    ssm_in_multiplier=0.8,
    ssm_out_multiplier=1.2,
    ssm_multipliers=[1.1, 0.9, 1.2, 0.7, 1.3],
    mlp_multipliers=[1.1, 0.6],
    embedding_multiplier=1.5,
    lm_head_multiplier=0.8,
)
#: Zamba: two Mamba-1 heads per mixer, attention without rotary embeddings, GELU MLPs.
ZAMBA = dict(
    hidden_size=12,
    intermediate_size=20,
    num_attention_heads=4,
    num_key_value_heads=2,
    n_mamba_heads=2,
    mamba_d_state=4,
    mamba_dt_rank=3,
    mamba_conv_bias=False,
    layers_block_type=LAYERS,
)
#: Zamba2: Mamba-2 mixers (two groups), rotary embeddings, q/k/v and MLP adapters per use, GELU MLPs.
ZAMBA2 = dict(
    hidden_size=12,
    intermediate_size=20,
    num_attention_heads=4,
    num_key_value_heads=4,
    n_mamba_heads=4,
    mamba_d_state=4,
    mamba_ngroups=2,
    chunk_size=4,
    layers_block_type=LAYERS,
    num_mem_blocks=1,
    use_shared_attention_adapter=True,
    adapter_rank=2,
    use_mem_rope=True,
)
MODELS = {
    "falcon_h1": (FalconH1Config, FalconH1ForCausalLM, modeling_falcon_h1.FalconH1Attention, FALCON_H1),
    "zamba": (ZambaConfig, ZambaForCausalLM, modeling_zamba.ZambaAttention, ZAMBA),
    "zamba2": (Zamba2Config, Zamba2ForCausalLM, modeling_zamba2.Zamba2Attention, ZAMBA2),
}


def _falcon_h1_gated_norm_without_narrowing(self, hidden_states, gate=None):
    if not self.norm_before_gate and gate is not None:
        hidden_states = hidden_states * F.silu(gate)
    grouped = hidden_states.reshape(*hidden_states.shape[:-1], self.n_groups, -1)
    grouped = grouped * torch.rsqrt(grouped.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
    hidden_states = self.weight * grouped.reshape(hidden_states.shape)
    if self.norm_before_gate and gate is not None:
        hidden_states = hidden_states * F.silu(gate)
    return hidden_states


@pytest.fixture(autouse=True)
def faithful_float64(monkeypatch):
    """HF's scans and norms compute in float32: swap in cast-free versions, so float64 comparisons are exact."""
    monkeypatch.setattr(modeling_falcon_h1, "mamba2_chunk_scan", _ssd_without_narrowing)
    monkeypatch.setattr(modeling_zamba2, "mamba2_chunk_scan", _ssd_without_narrowing)
    monkeypatch.setattr(modeling_zamba, "mamba_selective_scan", _scan_without_narrowing)
    for norm in (modeling_falcon_h1.FalconH1RMSNorm, modeling_zamba.ZambaRMSNorm, modeling_zamba2.Zamba2RMSNorm):
        monkeypatch.setattr(norm, "forward", _rms_norm_without_narrowing)
    monkeypatch.setattr(modeling_falcon_h1.FalconH1RMSNormGated, "forward", _falcon_h1_gated_norm_without_narrowing)
    monkeypatch.setattr(modeling_zamba2.Zamba2RMSNormGated, "forward", _gated_rms_norm_without_narrowing)


def build(
    name: str, seed: int = 0, model_type: type | None = None, conv_bias: bool = False, **overrides
) -> torch.nn.Module:
    config_type, causal_lm, _, sizes = MODELS[name]
    model_type = model_type or causal_lm
    torch.manual_seed(seed)
    settings = dict(vocab_size=VOCAB, num_hidden_layers=len(LAYERS), use_cache=False, tie_word_embeddings=False)
    config = config_type(**{**settings, **sizes, **overrides})
    config._attn_implementation = "sdpa"
    model = randomise(model_type(config), seed).double().eval()
    hybrids = [layer for layer in model.model.layers if hasattr(layer, "mamba_decoder")]
    for layer in hybrids[1:]:  # one shared block, as in the checkpoints (HF ties it when loading)
        if name == "zamba":
            layer.shared_transf = hybrids[0].shared_transf
        else:
            layer.shared_transformer = hybrids[0].shared_transformer
    if not conv_bias:
        with torch.no_grad():
            for module in model.modules():  # Zamba2's convs always have a bias: zero it, so CP-LRP conserves
                if isinstance(module, torch.nn.Conv1d) and module.bias is not None:
                    module.bias.zero_()
    return model


def embeds_of(model: torch.nn.Module, batch: int, length: int, seed: int) -> torch.Tensor:
    ids = torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))
    return model.get_input_embeddings()(ids).detach()


def _rules(name: str, mode: str) -> dict:
    return {MODELS[name][2]: AttentionRule(mode)}


def _total(relevance) -> torch.Tensor:
    """Per-example sum of a layer's relevances (all its tensor inputs: a hybrid layer also takes the embeddings)."""
    parts = relevance if isinstance(relevance, tuple) else (relevance,)
    return sum(part.sum(tuple(range(1, part.dim()))) for part in parts if part.is_floating_point())


# --- the tests ----------------------------------------------------------------------------------


def test_the_families_are_declared():
    for name, (_, model_type, attention, _) in MODELS.items():
        family = next(family for family in FAMILIES.families() if family.name == name)
        assert family.causal_lm is model_type and attention in family.module_rules()
    # every module type in the models has a rule (no module left to the unsupported-module check)
    for name in MODELS:
        plan = MambaLRP(build(name)).rule_plan()
        assert not plan.unsupported


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_with_rules_equals_the_model_and_the_reference(name):
    model = build(name, seed=1)
    embeds = embeds_of(model, 2, 7, seed=1)
    with torch.no_grad():
        original = model(inputs_embeds=embeds).logits
        with mamba_lrp_rules(model):
            ruled = model(inputs_embeds=embeds).logits
        torch.testing.assert_close(ruled, original, atol=1e-10, rtol=0)
        torch.testing.assert_close(ruled[:, -1], reference_logits(model, embeds, "cp"), atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("falcon_h1", {}),
        ("falcon_h1", {"mamba_norm_before_gate": True}),  # rmsnorm(y) * silu(z)
        ("falcon_h1", {"mamba_rms_norm": False}),  # y * silu(z), no norm (the config's default)
        ("zamba", {}),
        ("zamba", {"conv_bias": True, "mamba_conv_bias": True}),  # as in the checkpoints
        ("zamba2", {}),
        ("zamba2", {"conv_bias": True}),  # Zamba2's convs always have one
    ],
    ids=[
        "falcon_h1",
        "falcon_h1-norm_before_gate",
        "falcon_h1-no_norm",
        "zamba",
        "zamba-conv_bias",
        "zamba2",
        "zamba2-conv_bias",
    ],
)
@pytest.mark.parametrize("mode", ["attnlrp", "cp"])
def test_relevances_equal_the_loop_based_reference(name, overrides, mode):
    model = build(name, seed=2, **overrides)
    embeds = embeds_of(model, 2, 6, seed=2)
    expected, logit = reference(model, embeds, target=5, mode=mode)
    explainer = MambaLRP(model, rules=_rules(name, mode))
    relevance, delta = explainer.attribute(embeds, target=5, return_convergence_delta=True)
    torch.testing.assert_close(relevance, expected, atol=1e-10, rtol=0)
    # the delta equals the reference's: zero for CP-LRP unless a conv bias absorbs relevance
    torch.testing.assert_close(delta, expected.sum((1, 2)) - logit, atol=1e-10, rtol=0)
    if mode == "cp":
        assert (delta.abs().max() > 1e-6) if overrides.get("conv_bias") else (delta.abs().max() < 1e-10)
    else:
        assert delta.abs().max() > 1e-6  # the softmax rule is not conservative


@pytest.mark.parametrize("name", list(MODELS))
def test_cp_lrp_conserves_at_every_layer(name):
    """The embedding layer's output, and every layer's input and output, carry the logit.

    Zamba's hybrid layers read the embeddings directly, so a layer's output is not a cut of the
    model on its own: with the embedding inputs of the later hybrid layers it is.
    """
    model = build(name, seed=3)
    ids = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(3))
    embedding, layers = model.get_input_embeddings(), list(model.model.layers)
    with torch.no_grad():  # the logit from the float64 reference on the embeddings the model forms from ids
        embeds = embedding(ids) * getattr(model.config, "embedding_multiplier", 1.0)
        logit = reference_logits(model, embeds, "cp")[:, 4]

    def relevances(layer, to_input):
        explainer = LayerMambaLRP(model, layer, rules=_rules(name, "cp"))
        return explainer.attribute(ids, target=4, attribute_to_layer_input=to_input)

    # the relevance of the embeddings each hybrid layer concatenates (its second input)
    copies = [relevances(layer, True)[1].sum((1, 2)) if hasattr(layer, "mamba_decoder") else 0.0 for layer in layers]
    torch.testing.assert_close(_total(relevances(embedding, False)), logit, atol=1e-8, rtol=0)
    for index, layer in enumerate(layers):
        later = sum(copies[index + 1 :], torch.zeros_like(logit))
        for to_input in (False, True):  # a layer's input relevance includes its own copy's
            torch.testing.assert_close(_total(relevances(layer, to_input)) + later, logit, atol=1e-8, rtol=0)
    if name != "falcon_h1":
        assert all(isinstance(copy, float) or copy.abs().max() > 1e-6 for copy in copies)


@pytest.mark.parametrize("name", ["zamba", "zamba2"])
def test_the_embeddings_collect_both_paths(name):
    """Relevance reaches the embeddings through the stream and through the shared block's concatenated copy."""
    model = build(name, seed=4)
    ids = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(4))
    embeds = model.get_input_embeddings()(ids).detach()
    relevance = LayerMambaLRP(model, model.get_input_embeddings(), rules=_rules(name, "cp")).attribute(ids, target=2)
    expected, _ = reference(model, embeds, target=2, mode="cp")
    torch.testing.assert_close(relevance, expected, atol=1e-10, rtol=0)
    # without the copies' share the reference is far from it: both paths are collected
    stream_only, _ = reference(model, embeds, target=2, mode="cp", through_copy=False)
    assert (relevance - stream_only).abs().max() > 0.05 * relevance.abs().max()


@pytest.mark.parametrize("name", list(MODELS))
def test_negative_controls(name):
    model = build(name, seed=5)
    embeds = embeds_of(model, 2, 6, seed=5)
    expected, logit = reference(model, embeds, target=1, mode="attnlrp")
    leaf = embeds.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(model(inputs_embeds=leaf).logits[:, -1, 1].sum(), leaf)
    plain = (leaf * gradient).detach()
    assert ((plain.sum((1, 2)) - logit).abs() > 0.1 * logit.abs()).any()  # Gradient x Input misses the logit
    without_attention_rule = MambaLRP(model, rules={MODELS[name][2]: GradientRule()}).attribute(embeds, target=1)
    assert (without_attention_rule - expected).abs().max() > 1e-4  # dropping the rule breaks the equality


@pytest.mark.parametrize("name", list(MODELS))
def test_right_padded_batch_equals_rows_alone(name):
    model = build(name, seed=6)
    ids = torch.randint(0, VOCAB, (3, 7), generator=torch.Generator().manual_seed(6))
    lengths = [7, 4, 2]
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    explainer = LayerMambaLRP(model, model.get_input_embeddings(), rules=_rules(name, "attnlrp"))
    together = explainer.attribute(ids, target=[1, 2, 3], additional_forward_args=mask).sum(-1)
    for row, length in enumerate(lengths):
        alone = explainer.attribute(ids[row : row + 1, :length], target=row + 1).sum(-1)
        torch.testing.assert_close(together[row, :length], alone[0], atol=1e-10, rtol=0)
        assert torch.all(together[row, length:] == 0)


@pytest.mark.parametrize("name", list(MODELS))
def test_a_prefill_cache_is_filled_as_the_model_does(name):
    model = build(name, seed=7)
    ids = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        original = model(input_ids=ids, use_cache=True)
        with mamba_lrp_rules(model):
            ruled = model(input_ids=ids, use_cache=True)
    torch.testing.assert_close(ruled.logits, original.logits, atol=1e-10, rtol=0)
    for layer in range(len(model.model.layers)):
        for ours, theirs in zip(cached_states(ruled, layer), cached_states(original, layer)):
            torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=0)
    # a decoding step on the filled cache (the argument is `cache` from transformers 5.24)
    passed = {"cache": ruled.cache} if hasattr(ruled, "cache") else {"past_key_values": ruled.past_key_values}
    with pytest.raises(NotImplementedError, match="whole sequences"), mamba_lrp_rules(model):
        model(input_ids=ids[:, :1], use_cache=True, **passed)


@pytest.mark.parametrize(
    "name, classifier", [("zamba", ZambaForSequenceClassification), ("zamba2", Zamba2ForSequenceClassification)]
)
def test_sequence_classifiers_conserve(name, classifier):
    model = build(name, seed=8, model_type=classifier, num_labels=3)
    embeds = embeds_of(model, 2, 5, seed=8)
    with torch.no_grad():
        logits = model(inputs_embeds=embeds).logits
    relevance, delta = MambaLRP(model, rules=_rules(name, "cp")).attribute(
        embeds, target=2, return_convergence_delta=True
    )
    torch.testing.assert_close(relevance.sum((1, 2)), logits[:, 2], atol=1e-10, rtol=0)
    assert delta.abs().max() < 1e-10


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_falcon_h1_sequence_classifier_conserves(pooling):
    from captum_mamba.heads import FalconH1ForSequenceClassification

    config_type, _, _, sizes = MODELS["falcon_h1"]
    torch.manual_seed(9)
    settings = dict(vocab_size=VOCAB, num_hidden_layers=len(LAYERS), use_cache=False, num_labels=3)
    config = config_type(**{**settings, **sizes})
    config.pooling, config.classifier_bias = pooling, True
    config._attn_implementation = "sdpa"
    model = randomise(FalconH1ForSequenceClassification(config), 9).double().eval()
    with torch.no_grad():
        for module in model.modules():  # bias-free convolutions: only the classifier's bias is a sink
            if isinstance(module, torch.nn.Conv1d) and module.bias is not None:
                module.bias.zero_()
    embeds = embeds_of(model, 2, 5, seed=9)
    with torch.no_grad():
        logits = model(inputs_embeds=embeds).logits
    relevance, delta = MambaLRP(model, rules=_rules("falcon_h1", "cp")).attribute(
        embeds, target=2, return_convergence_delta=True
    )
    bias = model.score.bias.detach()[2]
    torch.testing.assert_close(relevance.sum((1, 2)) + bias, logits[:, 2], atol=1e-10, rtol=0)
    torch.testing.assert_close(delta, -bias.expand(2), atol=1e-10, rtol=0)
