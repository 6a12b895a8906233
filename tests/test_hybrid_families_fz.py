"""The falcon_h1, zamba and zamba2 families: what is particular to them.

The shared family suite (``family_checks.py``) checks the three families (and Falcon-H1's
gated-norm variants, Zamba's and Zamba2's conv biases) against the loop-based reference of
``reference_fz.py`` in both attention modes, the forward with the rules, conservation at every
layer (with Zamba's embedding inputs of the later hybrid layers), padded batches and the sequence
classifiers (the package's for Falcon-H1, transformers' own for Zamba and Zamba2); here: every
module has a rule, the embeddings collect relevance through both of Zamba's paths, the negative
controls, and a prefill cache filled as the model fills it.
"""

from __future__ import annotations

import pytest
import torch
from transformers.models.falcon_h1 import modeling_falcon_h1
from transformers.models.zamba import modeling_zamba
from transformers.models.zamba2 import modeling_zamba2

from captum_mamba import LayerMambaLRP, MambaLRP, mamba_lrp_rules
from captum_mamba.rules import GradientRule

from conftest import FAMILIES, cached_states
from family_checks import attention_types, ids_of, lm_of, rules_for
from family_references import reference_relevance

MODELS = {
    "falcon_h1": (modeling_falcon_h1.FalconH1ForCausalLM, modeling_falcon_h1.FalconH1Attention),
    "zamba": (modeling_zamba.ZambaForCausalLM, modeling_zamba.ZambaAttention),
    "zamba2": (modeling_zamba2.Zamba2ForCausalLM, modeling_zamba2.Zamba2Attention),
}

pytestmark = pytest.mark.usefixtures("float64_faithful_hf")


def build(name: str, seed: int = 0) -> torch.nn.Module:
    return lm_of(FAMILIES[name], seed)


def embeds_of(model: torch.nn.Module, batch: int, length: int, seed: int) -> torch.Tensor:
    return model.get_input_embeddings()(ids_of(batch, length, seed)).detach()


def test_the_families_are_declared():
    for name, (model_type, attention) in MODELS.items():
        family = FAMILIES[name]
        assert family.causal_lm is model_type and attention in family.module_rules()
    # every module type in the models has a rule (no module left to the unsupported-module check)
    for name in MODELS:
        plan = MambaLRP(build(name)).rule_plan()
        assert not plan.unsupported


@pytest.mark.parametrize("name", ["zamba", "zamba2"])
def test_the_embeddings_collect_both_paths(name):
    """Relevance reaches the embeddings through the stream and through the shared block's concatenated copy."""
    model = build(name, seed=4)
    ids = ids_of(2, 6, 4)
    embeds = model.get_input_embeddings()(ids).detach()
    explainer = LayerMambaLRP(model, model.get_input_embeddings(), rules=rules_for(FAMILIES[name], "cp"))
    relevance = explainer.attribute(ids, target=2)
    expected, _ = reference_relevance(name, model, embeds, target=2, mode="cp")
    torch.testing.assert_close(relevance, expected, atol=1e-10, rtol=0)
    # without the copies' share the reference is far from it: both paths are collected
    stream_only, _ = reference_relevance(name, model, embeds, target=2, mode="cp", through_copy=False)
    assert (relevance - stream_only).abs().max() > 0.05 * relevance.abs().max()


@pytest.mark.parametrize("name", list(MODELS))
def test_negative_controls(name):
    model = build(name, seed=5)
    embeds = embeds_of(model, 2, 6, seed=5)
    expected, logit = reference_relevance(name, model, embeds, target=1, mode="attnlrp")
    leaf = embeds.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(model(inputs_embeds=leaf).logits[:, -1, 1].sum(), leaf)
    plain = (leaf * gradient).detach()
    assert ((plain.sum((1, 2)) - logit).abs() > 0.1 * logit.abs()).any()  # Gradient x Input misses the logit
    without_rule = {kind: GradientRule() for kind in attention_types(FAMILIES[name])}
    without_attention_rule = MambaLRP(model, rules=without_rule).attribute(embeds, target=1)
    assert (without_attention_rule - expected).abs().max() > 1e-4  # dropping the rule breaks the equality


@pytest.mark.parametrize("name", list(MODELS))
def test_a_prefill_cache_is_filled_as_the_model_does(name):
    model = build(name, seed=7)
    ids = ids_of(2, 6, 7)
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
