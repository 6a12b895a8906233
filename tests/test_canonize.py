"""Captum's own LRP / LayerLRP engine on canonized Mamba models reproduces MambaLRP."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LRP, LayerLRP
from captum.attr._core import lrp as captum_lrp
from torch import nn

from captum_mamba import LayerMambaLRP, MambaLRP, UnsupportedModuleError, canonize
from captum_mamba.canonizers.leaves import LEAF_RULES
from captum_mamba.evaluation import ExplainedLogits

from conftest import embeddings_of, tiny_classifier, tiny_lm

# Captum's z-rule divides by ``z + 1e-9 * sign(z)`` (EpsilonRule's default, also on torch's
# nn.Linear layers, whose Captum defaults stay untouched): agreement to about 1e-7 relative.
TOLERANCE = 1e-6


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _snapshot(model: nn.Module):
    return (
        [(name, type(module), id(module)) for name, module in model.named_modules()],
        {k: v.clone() for k, v in model.state_dict().items()},
        dict(model.__dict__),
    )


@pytest.mark.parametrize("conv_bias", [False, True])
def test_captum_lrp_equals_mamba_lrp_on_a_causal_lm(conv_bias, ids):
    model = tiny_lm(seed=101, use_conv_bias=conv_bias)
    embeds = embeddings_of(model, ids)
    target = torch.tensor([3, 7])
    reference = MambaLRP(model).attribute(embeds, target=target)
    with canonize(model):
        forward = ExplainedLogits(model)
        first = LRP(forward).attribute(embeds.clone(), target=target)
        second = LRP(forward).attribute(embeds.clone(), target=target)  # Captum deleted the rules in between
    assert _relative(first, reference) <= TOLERANCE
    torch.testing.assert_close(second, first, atol=0, rtol=0)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_captum_lrp_equals_mamba_lrp_on_a_classifier_with_padding(pooling):
    model = tiny_classifier(seed=102, pooling=pooling)
    ids = torch.randint(0, 40, (3, 9), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    embeds = embeddings_of(model, ids)
    target = torch.tensor([0, 2, 1])
    reference = MambaLRP(model).attribute(embeds, target=target, additional_forward_args=mask)
    with canonize(model):
        relevance, delta = LRP(ExplainedLogits(model)).attribute(
            embeds.clone(), target=target, additional_forward_args=(mask,), return_convergence_delta=True
        )
    assert _relative(relevance, reference) <= TOLERANCE
    logits = model(inputs_embeds=embeds, attention_mask=mask).logits.gather(1, target[:, None])[:, 0]
    assert float(delta.abs().max()) <= TOLERANCE * float(logits.abs().max())  # bias-free: sum R = logit
    assert float(relevance[1, 6:].abs().max()) == 0.0


def test_layer_lrp_conserves_and_matches_layer_mamba_lrp_at_every_block(ids):
    model = tiny_classifier(seed=103)
    embeds = embeddings_of(model, ids)
    target = torch.tensor([1, 2])
    with torch.no_grad():
        logits = model(inputs_embeds=embeds).logits.gather(1, target[:, None])[:, 0]
    references = [LayerMambaLRP(model, block).attribute(embeds, target=target) for block in model.backbone.layers]
    with canonize(model):
        forward = ExplainedLogits(model)
        for block, reference in zip(model.backbone.layers, references):
            relevance = LayerLRP(forward, block.add).attribute(embeds.clone(), target=target)
            assert _relative(relevance, reference) <= TOLERANCE
            torch.testing.assert_close(
                relevance.sum((1, 2)), logits, atol=TOLERANCE * float(logits.abs().max()), rtol=0
            )
        normed = LayerLRP(forward, model.backbone.norm_f).attribute(embeds.clone(), target=target)
        torch.testing.assert_close(normed.sum((1, 2)), logits, atol=TOLERANCE * float(logits.abs().max()), rtol=0)


def test_forward_unchanged_and_model_restored(ids, float64_faithful_hf):
    model = tiny_classifier(seed=104, classifier_bias=True)
    embeds = embeddings_of(model, ids)
    before = _snapshot(model)
    expected = model(input_ids=ids).logits
    with canonize(model) as canonical:
        assert canonical is model
        torch.testing.assert_close(model(input_ids=ids).logits, expected, atol=1e-12, rtol=0)
        torch.testing.assert_close(model(inputs_embeds=embeds).logits, expected, atol=1e-12, rtol=0)
        LRP(ExplainedLogits(model)).attribute(embeds.clone(), target=1)
    after = _snapshot(model)
    assert after[0] == before[0] and after[2].keys() == before[2].keys()
    for key, value in before[1].items():
        torch.testing.assert_close(after[1][key], value, atol=0, rtol=0)
    with pytest.raises(RuntimeError, match="inside"):
        with canonize(model):
            raise RuntimeError("inside")
    assert _snapshot(model)[0] == before[0]
    torch.testing.assert_close(model(input_ids=ids).logits, expected, atol=0, rtol=0)


def test_only_our_leaf_types_are_registered_with_captum():
    captum_defaults = dict(captum_lrp.SUPPORTED_LAYERS_WITH_RULES)
    with canonize(tiny_lm(seed=105)):
        pass
    for layer_type, rule in captum_defaults.items():
        assert captum_lrp.SUPPORTED_LAYERS_WITH_RULES[layer_type] is rule
    added = set(captum_lrp.SUPPORTED_LAYERS_WITH_RULES) - set(captum_defaults)
    assert added <= set(LEAF_RULES)
    assert all(captum_lrp.SUPPORTED_LAYERS_WITH_RULES[leaf] is rule for leaf, rule in LEAF_RULES.items())


@pytest.mark.parametrize("family", ["mamba2", "falcon_mamba"])
def test_other_families_are_refused_clearly(family):
    model = tiny_lm(seed=106, family=family)
    with pytest.raises(UnsupportedModuleError, match="MambaLRP / LayerMambaLRP"):
        with canonize(model):
            pass
    assert model(input_ids=torch.tensor([[1, 2]])).logits.shape[-1] == 40
