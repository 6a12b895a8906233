"""MambaLRP equals an independent, loop-based implementation of the paper's equations."""

from __future__ import annotations

import pytest
import torch

from captum_mamba import MambaLRP

from conftest import embeddings_of, tiny_classifier, tiny_lm
from reference import reference_explanation


@pytest.mark.parametrize("conv_bias", [False, True])
def test_lm_relevance_equals_reference(conv_bias, ids):
    model = tiny_lm(seed=11, use_conv_bias=conv_bias)
    embeds = embeddings_of(model, ids)
    expected, logit, _ = reference_explanation(model, embeds, target=7)
    relevance = MambaLRP(model).attribute(embeds, target=7)
    torch.testing.assert_close(relevance, expected, atol=1e-10, rtol=0)
    assert relevance.abs().max() > 1e-3


def test_classifier_relevance_equals_reference(ids):
    model = tiny_classifier(seed=12, pooling="mean", classifier_bias=True)
    embeds = embeddings_of(model, ids)
    expected, _, _ = reference_explanation(model, embeds, target=1, head="classifier")
    torch.testing.assert_close(MambaLRP(model).attribute(embeds, target=1), expected, atol=1e-10, rtol=0)


def test_earlier_position_equals_reference(ids):
    model = tiny_lm(seed=13)
    embeds = embeddings_of(model, ids)
    expected, _, _ = reference_explanation(model, embeds, target=3, position=4)
    relevance = MambaLRP(model, explained_position=4).attribute(embeds, target=3)
    torch.testing.assert_close(relevance, expected, atol=1e-10, rtol=0)
    assert torch.all(relevance[:, 5:] == 0)  # causality: later tokens cannot matter
