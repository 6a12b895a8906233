"""With the rules applied, the model computes the same outputs."""

from __future__ import annotations

import pytest
import torch

from captum_mamba import ExplainedLogits, mamba_lrp_rules

from conftest import cached_states, embeddings_of, tiny_classifier, tiny_lm


@pytest.mark.parametrize("conv_bias", [False, True])
def test_float64_backbone_outputs_equal(conv_bias, ids, float64_faithful_hf):
    model = tiny_lm(seed=21, use_conv_bias=conv_bias)
    embeds = embeddings_of(model, ids)
    with torch.no_grad():
        original = model.backbone(inputs_embeds=embeds).last_hidden_state
        with mamba_lrp_rules(model):
            ruled = model.backbone(inputs_embeds=embeds).last_hidden_state
    torch.testing.assert_close(ruled, original, atol=1e-10, rtol=0)


def test_float64_classifier_logits_equal(ids, float64_faithful_hf):
    model = tiny_classifier(seed=22, classifier_bias=True, pooling="last")
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0
    with torch.no_grad():
        original = model(input_ids=ids, attention_mask=mask).logits
        with mamba_lrp_rules(model):
            ruled = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(ruled, original, atol=1e-10, rtol=0)


def test_float64_lm_logits_equal_to_float32_precision_of_unpatched_hf(ids):
    model = tiny_lm(seed=23, residual_in_fp32=True)
    embeds = model.get_input_embeddings()(ids)
    with torch.no_grad():
        original = model(input_ids=ids).logits
        with mamba_lrp_rules(model):
            ruled = model(input_ids=ids).logits  # the model's own forward, with its .float() on the logits
            explained = ExplainedLogits(model)(embeds)
    assert ruled.dtype == original.dtype
    torch.testing.assert_close(ruled, original, atol=1e-5, rtol=1e-5)
    assert explained.dtype == torch.float64  # the explained logits are read before HF narrows them
    torch.testing.assert_close(explained.float(), original[:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("conv_bias", [False, True])
def test_float32_lm_logits_equal(conv_bias, ids):
    model = tiny_lm(seed=24, dtype=torch.float32, use_conv_bias=conv_bias, residual_in_fp32=True)
    with torch.no_grad():
        original = model(input_ids=ids).logits
        with mamba_lrp_rules(model):
            ruled = model(input_ids=ids).logits
    torch.testing.assert_close(ruled, original, atol=1e-5, rtol=0)


def test_cache_prefill_matches_and_fills_cache(ids):
    model = tiny_lm(seed=25, dtype=torch.float32)
    with torch.no_grad():
        original = model(input_ids=ids, use_cache=True)
        with mamba_lrp_rules(model):
            ruled = model(input_ids=ids, use_cache=True)
    torch.testing.assert_close(ruled.logits, original.logits, atol=1e-5, rtol=0)
    for layer in range(model.config.num_hidden_layers):
        for ours, theirs in zip(cached_states(ruled, layer), cached_states(original, layer)):
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
