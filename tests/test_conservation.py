"""Conservation, the method's contract: relevances sum to the explained logit."""

from __future__ import annotations

import pytest
import torch
from captum.attr import InputXGradient
from transformers.models.mamba.modeling_mamba import MambaMixer, MambaRMSNorm

from captum_mamba import LayerMambaLRP, MambaLRP
from captum_mamba.rules import MixerRule

from conftest import embeddings_of, tiny_classifier, tiny_lm
from reference import reference_explanation


def _tolerance(logits: torch.Tensor) -> torch.Tensor:
    return 1e-8 * torch.clamp(logits.abs(), min=1.0)


def _logit(model, embeds, target):
    """The explained logit in full float64 (Hugging Face's own forward narrows parts to float32)."""
    head = "classifier" if hasattr(model, "score") else "lm"
    return reference_explanation(model, embeds, target, head=head)[1]


MODELS = {
    "lm": lambda: tiny_lm(seed=3),
    "lm-residual-fp32": lambda: tiny_lm(seed=4, residual_in_fp32=True),
    "classifier-mean": lambda: tiny_classifier(seed=5, pooling="mean"),
    "classifier-last": lambda: tiny_classifier(seed=6, pooling="last"),
}


@pytest.mark.parametrize("name", MODELS)
def test_relevance_sums_to_logit_without_bias_sinks(name, ids):
    model = MODELS[name]()
    embeds = embeddings_of(model, ids)
    relevance, delta = MambaLRP(model).attribute(embeds, target=2, return_convergence_delta=True)
    logit = _logit(model, embeds, 2)
    total = relevance.sum((1, 2))
    assert torch.all((total - logit).abs() <= _tolerance(logit)), (total, logit)
    assert torch.allclose(delta, total - logit, atol=1e-12)


@pytest.mark.parametrize("name", MODELS)
def test_conservation_at_every_residual_stream(name, ids):
    model = MODELS[name]()
    logit = _logit(model, embeddings_of(model, ids), 1)
    layers = [model.backbone.embeddings, *model.backbone.layers]
    for layer in layers:
        relevance = LayerMambaLRP(model, layer).attribute(ids, target=1)
        total = relevance.sum((1, 2))
        assert torch.all((total - logit).abs() <= _tolerance(logit)), (layer, total, logit)


def test_conv_bias_absorbs_exactly_the_convergence_delta(ids):
    model = tiny_lm(seed=7, use_conv_bias=True)
    embeds = embeddings_of(model, ids)
    _, delta = MambaLRP(model).attribute(embeds, target=5, return_convergence_delta=True)
    _, _, bias_relevance = reference_explanation(model, embeds, target=5)
    assert bias_relevance.abs().min() > 1e-3  # the biases do absorb relevance
    torch.testing.assert_close(delta, -bias_relevance, atol=1e-10, rtol=0)


def test_classifier_head_bias_shows_in_delta(ids):
    model = tiny_classifier(seed=8, classifier_bias=True)
    embeds = embeddings_of(model, ids)
    _, delta = MambaLRP(model).attribute(embeds, target=[0, 2], return_convergence_delta=True)
    expected = -model.score.bias.detach()[torch.tensor([0, 2])]
    torch.testing.assert_close(delta, expected, atol=1e-10, rtol=0)


def test_plain_gradient_x_input_misses_the_logit(ids):
    model = tiny_lm(seed=3)
    embeds = embeddings_of(model, ids)
    plain = InputXGradient(lambda e: model(inputs_embeds=e).logits[:, -1]).attribute(embeds.clone(), target=2)
    logit = _logit(model, embeds, 2)
    relative_miss = (plain.sum((1, 2)) - logit).abs() / logit.abs()
    assert torch.all(relative_miss > 0.1), relative_miss


ABLATIONS = {
    "silu": {MambaMixer: MixerRule(silu=None)},
    "ssm": {MambaMixer: MixerRule(ssm=None)},
    "gate": {MambaMixer: MixerRule(gate=None)},
    "norm": {MambaRMSNorm: None},
}


@pytest.mark.parametrize("removed", ABLATIONS)
def test_removing_any_single_rule_breaks_conservation(removed, ids):
    model = tiny_lm(seed=3)
    embeds = embeddings_of(model, ids)
    relevance = MambaLRP(model, rules=ABLATIONS[removed]).attribute(embeds, target=2)
    logit = _logit(model, embeds, 2)
    relative_miss = (relevance.sum((1, 2)) - logit).abs() / logit.abs()
    assert torch.all(relative_miss > 1e-3), relative_miss
