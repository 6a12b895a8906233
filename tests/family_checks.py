"""The checks every declared model family gets (the shared family suite).

Each check takes a :class:`~captum_mamba.families.ModelFamily` and builds its tiny float64
models from the declaration, so a family is tested the moment it is declared: see
``test_family_suite.py`` (the package's families) and ``test_toy_family.py`` (a family declared
in a test). Logits to compare against are computed independently: by a plain forward pass of
the model without any rule, or by the loop-based reference of ``reference.py``.
"""

from __future__ import annotations

import torch
from captum.attr import LRP, LayerLRP

from captum_mamba import ExplainedLogits, LayerMambaLRP, MambaLRP, canonize, mamba_lrp_rules
from captum_mamba.families import ModelFamily

from conftest import VOCAB, randomise
from reference import reference_explanation


def lm_of(family: ModelFamily, seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    return randomise(family.build_lm(vocab_size=VOCAB, **overrides), seed).double().eval()


def classifier_of(family: ModelFamily, seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return randomise(family.build_classifier(vocab_size=VOCAB, **kwargs), seed).double().eval()


def ids_of(batch: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def plain_logits(model: torch.nn.Module, embeds: torch.Tensor) -> torch.Tensor:
    """The last position's logits from the model's own modules, no rule applied (float64, never narrowed)."""
    with torch.no_grad():
        if hasattr(model, "lm_head"):
            return model.lm_head(model.backbone(inputs_embeds=embeds).last_hidden_state[:, -1])
        return model(inputs_embeds=embeds).logits


def snapshot(model: torch.nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "forwards": {name: "forward" in vars(m) for name, m in model.named_modules()},
        "modules": [(name, type(m)) for name, m in model.named_modules()],
    }


def check_forward_equivalence(family: ModelFamily, seed: int = 1) -> None:
    """The model's outputs with the rules applied equal its own (1e-10; HF's float32 casts removed by the fixture)."""
    model = lm_of(family, seed, use_conv_bias=True)
    ids = ids_of(2, 9, seed)
    with torch.no_grad():
        original = model.backbone(input_ids=ids).last_hidden_state
        with mamba_lrp_rules(model):
            ruled = model.backbone(input_ids=ids).last_hidden_state
    torch.testing.assert_close(ruled, original, atol=1e-10, rtol=0)


def check_conservation_at_every_layer(family: ModelFamily, seed: int = 2) -> None:
    """Relevances sum to an independently computed logit at the input and at every residual stream."""
    model = lm_of(family, seed)
    ids = ids_of(2, 7, seed)
    embeds = model.get_input_embeddings()(ids).detach()
    logit = plain_logits(model, embeds)[:, 3]
    relevance, delta = MambaLRP(model).attribute(embeds, target=3, return_convergence_delta=True)
    scale = logit.abs().clamp(min=1)
    assert torch.all((relevance.sum((1, 2)) - logit).abs() <= 1e-8 * scale)
    assert torch.all((delta - (relevance.sum((1, 2)) - logit)).abs() <= 1e-8 * scale)
    for layer in [model.get_input_embeddings(), *model.backbone.layers]:
        total = LayerMambaLRP(model, layer).attribute(ids, target=3).sum((1, 2))
        assert torch.all((total - logit).abs() <= 1e-8 * scale), layer


def check_reference(family: ModelFamily, seed: int = 3) -> None:
    """Relevances equal the loop-based reference of the paper's equations, also with a conv bias (delta = its share)."""
    for conv_bias in (False, True):
        model = lm_of(family, seed, use_conv_bias=conv_bias)
        embeds = model.get_input_embeddings()(ids_of(2, 8, seed)).detach()
        expected, logit, bias_relevance = reference_explanation(model, embeds, target=5)
        relevance, delta = MambaLRP(model).attribute(embeds, target=5, return_convergence_delta=True)
        torch.testing.assert_close(relevance, expected, atol=1e-10, rtol=0)
        torch.testing.assert_close(delta, -bias_relevance, atol=1e-10, rtol=0)


def check_batch_equals_one_by_one(family: ModelFamily, seed: int = 4) -> None:
    """A right-padded batch explains each row as it is explained alone; pad positions get zero."""
    model = lm_of(family, seed)
    ids = ids_of(3, 8, seed)
    lengths = [8, 5, 2]
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    explainer = LayerMambaLRP(model, model.get_input_embeddings())
    together = explainer.attribute(ids, target=[1, 2, 3], additional_forward_args=mask).sum(-1)
    for row, length in enumerate(lengths):
        alone = explainer.attribute(ids[row : row + 1, :length], target=row + 1).sum(-1)
        torch.testing.assert_close(together[row, :length], alone[0], atol=1e-10, rtol=0)
        assert torch.all(together[row, length:] == 0)


def check_classifier(family: ModelFamily, seed: int = 5) -> None:
    """Classifiers (both poolings) conserve relevance; the classifier bias shows in the delta."""
    if family.classifier is None:
        return
    for pooling in ("mean", "last"):
        model = classifier_of(family, seed, pooling=pooling, classifier_bias=True)
        embeds = model.get_input_embeddings()(ids_of(2, 6, seed)).detach()
        logit = plain_logits(model, embeds)[:, 1]
        relevance, delta = MambaLRP(model).attribute(embeds, target=1, return_convergence_delta=True)
        torch.testing.assert_close(relevance.sum((1, 2)) - delta, logit, atol=1e-10, rtol=0)
        torch.testing.assert_close(delta, -model.score.bias.detach()[1].expand(2), atol=1e-10, rtol=0)


def check_model_restored(family: ModelFamily, seed: int = 6) -> None:
    """Explaining (also through canonize) leaves the model exactly as it was, also after an exception."""
    model = lm_of(family, seed)
    embeds = model.get_input_embeddings()(ids_of(2, 5, seed)).detach()
    before = snapshot(model)
    outputs = plain_logits(model, embeds)
    MambaLRP(model).attribute(embeds, target=0)
    LayerMambaLRP(model, model.backbone.layers[0]).attribute(embeds, target=0)
    try:
        with mamba_lrp_rules(model):
            raise RuntimeError("inside")
    except RuntimeError:
        pass
    if family.canonizable:
        with canonize(model):
            LRP(ExplainedLogits(model)).attribute(embeds, target=0)
    after = snapshot(model)
    assert after["forwards"] == before["forwards"] and after["modules"] == before["modules"]
    assert all(torch.equal(after["state"][k], v) for k, v in before["state"].items())
    torch.testing.assert_close(plain_logits(model, embeds), outputs, atol=0, rtol=0)


def check_canonize(family: ModelFamily, seed: int = 7) -> None:
    """Captum's own LRP / LayerLRP on the canonized model give MambaLRP's / LayerMambaLRP's relevances."""
    if not family.canonizable:
        return
    model = lm_of(family, seed)
    embeds = model.get_input_embeddings()(ids_of(2, 6, seed)).detach()
    expected = MambaLRP(model).attribute(embeds, target=[2, 4])
    at_block = [LayerMambaLRP(model, block).attribute(embeds, target=[2, 4]) for block in model.backbone.layers]
    forward = ExplainedLogits(model)
    with canonize(model) as canonization:
        relevance = LRP(forward).attribute(embeds, target=[2, 4])
        blocks = [LayerLRP(forward, block).attribute(embeds, target=[2, 4]) for block in canonization.blocks]
    scale = expected.abs().max()
    assert (relevance - expected).abs().max() <= 1e-10 * scale
    assert len(blocks) == len(at_block)
    for got, want in zip(blocks, at_block):
        assert (got - want).abs().max() <= 1e-10 * want.abs().max()


CHECKS = {
    "forward_equivalence": check_forward_equivalence,
    "conservation_at_every_layer": check_conservation_at_every_layer,
    "reference": check_reference,
    "batch_equals_one_by_one": check_batch_equals_one_by_one,
    "classifier": check_classifier,
    "model_restored": check_model_restored,
    "canonize": check_canonize,
}


def check_random_configurations(family: ModelFamily, draws: int = 50, seed: int = 0) -> int:
    r"""
    A seeded sweep over random tiny float64 configurations of the family (sizes, layers, kernel
    sizes, groups, chunk sizes from its ``random_config``; batch, length, right padding and conv
    biases drawn here). Per draw: each padded row's relevances equal the loop-based reference of
    that row alone (1e-10), pads get zero, the delta is the conv biases' share (exact
    conservation on bias-free draws), the batch equals the rows explained one by one, and the
    model is restored.

    Returns:
        *int*: the number of bias-free draws (conservation checked exactly).
    """
    import random

    assert family.random_config is not None, f"{family.name} declares no random_config"
    rng = random.Random(f"{family.name}-{seed}")
    bias_free = 0
    for draw in range(draws):
        overrides = family.random_config(rng)
        conv_bias = rng.random() < 0.3
        bias_free += not conv_bias
        batch, length = rng.randint(1, 3), rng.randint(1, 9)
        lengths = [length] + [rng.randint(1, length) for _ in range(batch - 1)]
        context = f"{family.name} draw {draw}: {overrides}, conv_bias={conv_bias}, lengths={lengths}"
        model = lm_of(family, draw, use_conv_bias=conv_bias, **overrides)
        ids = ids_of(batch, length, draw)
        mask = torch.zeros_like(ids)
        for row, n in enumerate(lengths):
            mask[row, :n] = 1
        target = rng.randrange(VOCAB)
        before = snapshot(model)
        embeds = model.get_input_embeddings()(ids).detach()
        relevance, delta = MambaLRP(model).attribute(
            embeds, target=target, additional_forward_args=mask, return_convergence_delta=True
        )
        for row, n in enumerate(lengths):
            alone = embeds[row : row + 1, :n]
            expected, logit, bias_share = reference_explanation(model, alone, target=target)
            assert (relevance[row, :n] - expected[0]).abs().max() <= 1e-10, context
            assert torch.all(relevance[row, n:] == 0), context
            scale = logit.abs().clamp(min=1)
            assert (delta[row] + bias_share[0]).abs() <= 1e-8 * scale[0], context
            if not conv_bias:
                assert (relevance[row].sum() - logit[0]).abs() <= 1e-8 * scale[0], context
            single = MambaLRP(model).attribute(alone, target=target)
            assert (single[0] - relevance[row, :n]).abs().max() <= 1e-10, context
        after = snapshot(model)
        assert after["forwards"] == before["forwards"] and after["modules"] == before["modules"], context
    return bias_free
