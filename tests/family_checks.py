"""The checks every declared model family gets (the shared family suite).

Each check takes a :class:`~captum_mamba.families.ModelFamily` and builds its tiny float64
models from the declaration (``config``, ``causal_lm``, ``classifier``), so a family is tested
the moment it is declared: see ``test_family_suite.py`` (the package's families) and
``test_toy_family.py`` (a family declared in a test). What the declaration cannot say comes from
the family's entry in ``family_references.py``: its loop-based reference and the settings that
give its models biases. Logits to compare against are computed independently: by a plain
forward pass of the model's own modules without any rule (:func:`plain_logits`), or by the
reference. Families with attention are checked in both attention modes: ``"cp"`` (CP-LRP:
relevance conserved exactly on bias-free models) and ``"attnlrp"`` (its delta equals the
reference's); the Mamba families' rules all conserve (mode ``"cp"``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from captum.attr import LRP, LayerLRP
from torch import Tensor, nn

from captum_mamba import ExplainedLogits, LayerMambaLRP, MambaLRP, canonize, mamba_lrp_rules
from captum_mamba.families import ModelFamily
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.moe import ExpertsRule

from bias_share import bias_share
from conftest import VOCAB, randomise
from family_references import reference_of, reference_relevance

# --- building the family's models -----------------------------------------------------------------


def _zero_conv_biases(model: nn.Module) -> None:
    with torch.no_grad():
        for module in model.modules():  # Zamba2's always exist: zeroed, the model is bias-free
            if isinstance(module, nn.Conv1d) and module.bias is not None:
                module.bias.zero_()


def _settings(family: ModelFamily, conv_bias: bool, linear_bias: bool) -> dict[str, Any]:
    entry = reference_of(family.name)
    settings: dict[str, Any] = dict(vocab_size=VOCAB)
    if conv_bias:
        assert entry.conv_bias is not None, f"{family.name} has no convolution"
        settings.update(entry.conv_bias)
    if linear_bias:
        settings.update(entry.linear_bias)
    return settings


def _finish(family: ModelFamily, model: nn.Module, seed: int, conv_bias: bool) -> nn.Module:
    reference_of(family.name).prepare(model)
    model = randomise(model, seed).double().eval()
    if not conv_bias:
        _zero_conv_biases(model)
    return model


def lm_of(
    family: ModelFamily, seed: int = 0, conv_bias: bool = False, linear_bias: bool = False, **overrides: Any
) -> nn.Module:
    """The family's causal LM on its tiny configuration: float64, weights of order one, bias-free unless asked."""
    torch.manual_seed(seed)
    model = family.build_lm(**{**_settings(family, conv_bias, linear_bias), **overrides})
    return _finish(family, model, seed, conv_bias)


def classifiers_of(family: ModelFamily, seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    r"""
    The family's sequence classifiers: the declared one with a biased score (both poolings), and
    transformers' own (the last token that is not the pad token: a pad id is needed for batches,
    0 here; fed embeddings, they read the last position).
    """
    if family.classifier is not None:
        for pooling in ("mean", "last"):
            torch.manual_seed(seed)
            model = family.build_classifier(pooling, classifier_bias=True, num_labels=3, vocab_size=VOCAB)
            yield pooling, _finish(family, model, seed, conv_bias=False)
    for classifier in reference_of(family.name).classifiers:
        torch.manual_seed(seed)
        model = classifier(family.config(vocab_size=VOCAB, num_labels=3, pad_token_id=0))
        yield classifier.__name__, _finish(family, model, seed, conv_bias=False)


def ids_of(batch: int, length: int, seed: int) -> Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


# --- what the checks read from the models ---------------------------------------------------------


def attention_types(family: ModelFamily) -> list[type[nn.Module]]:
    return [module_type for module_type, rule in family.module_rules().items() if isinstance(rule, AttentionRule)]


def modes_of(family: ModelFamily) -> tuple[str, ...]:
    """The attention modes to check: both where the family has attention, else the conserving rules only."""
    return ("attnlrp", "cp") if attention_types(family) else ("cp",)


def rules_for(
    family: ModelFamily, mode: str, extra_rules: Mapping[type[nn.Module], Any] | None = None
) -> dict[type[nn.Module], Any]:
    """The attention rule of ``mode`` for each attention type, plus ``extra_rules`` (a family's rule options)."""
    return {**{module_type: AttentionRule(mode) for module_type in attention_types(family)}, **(extra_rules or {})}


def has_experts(family: ModelFamily, model: nn.Module) -> bool:
    kinds = tuple(t for t, rule in family.module_rules().items() if isinstance(rule, ExpertsRule))
    return bool(kinds) and any(isinstance(module, kinds) for module in model.modules())


def layers_of(model: nn.Module) -> list[nn.Module]:
    """The decoder layers (residual blocks) of the model's base model."""
    return list(model.base_model.layers)


def head_logits(
    family: ModelFamily, model: nn.Module, input_ids: Tensor | None = None, inputs_embeds: Tensor | None = None
) -> Tensor:
    r"""
    The last position's logits (a causal LM) or the logits (a classifier) composed from the
    model's own modules: the base model, then the LM head times the family's constant (the causal
    LMs' own forwards may narrow the logits to float32); experts that would narrow float64 run in
    a faithful implementation of transformers' (``narrowing_experts``). No rule is applied unless
    the caller applies them.
    """
    entry = reference_of(family.name)
    config = model.config
    narrowing = getattr(config, "_experts_implementation", None)
    if narrowing in entry.narrowing_experts:  # HF's own forward, through experts that keep float64
        config._experts_implementation = entry.narrowing_experts[narrowing]
    try:
        if not hasattr(model, "lm_head"):
            return model(input_ids=input_ids, inputs_embeds=inputs_embeds).logits
        hidden = model.base_model(input_ids=input_ids, inputs_embeds=inputs_embeds).last_hidden_state
        return model.lm_head(hidden[:, -1]) * entry.head_scale(model)
    finally:
        if narrowing in entry.narrowing_experts:
            config._experts_implementation = narrowing


def plain_logits(
    family: ModelFamily, model: nn.Module, input_ids: Tensor | None = None, inputs_embeds: Tensor | None = None
) -> Tensor:
    """:func:`head_logits` without gradients (float64, never narrowed)."""
    with torch.no_grad():
        return head_logits(family, model, input_ids, inputs_embeds)


def snapshot(model: nn.Module) -> dict:
    config = getattr(model, "config", None)
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "forwards": {name: "forward" in vars(m) for name, m in model.named_modules()},
        "modules": [(name, type(m)) for name, m in model.named_modules()],
        "implementations": [getattr(config, k, None) for k in ("_attn_implementation", "_experts_implementation")],
    }


def _parts(relevance: Tensor | tuple) -> list[Tensor]:
    parts = relevance if isinstance(relevance, tuple) else (relevance,)
    return [part for part in parts if isinstance(part, Tensor) and part.is_floating_point()]


def _total(parts: list[Tensor]) -> Tensor:
    """Per-example sum of the relevances of all of a layer's tensor inputs (or of its output)."""
    return sum(part.sum(tuple(range(1, part.dim()))) for part in parts)


# --- the checks -----------------------------------------------------------------------------------


def _implementations(family: ModelFamily, model: nn.Module) -> list[tuple[str, str]]:
    """(attention, experts) implementations to run: eager and SDPA attention; eager and batched experts."""
    attention = ["sdpa", "eager"] if attention_types(family) else ["eager"]
    cases = [(name, "eager") for name in attention]
    return cases + [("sdpa", "batched_mm")] if has_experts(family, model) else cases


def check_forward_equivalence(family: ModelFamily, seed: int = 1, **overrides: Any) -> None:
    r"""
    The model's outputs with the rules applied equal its own (1e-10; HF's float32 casts removed by
    the fixture) and the reference's forward (1e-10), for each attention and experts implementation
    (switched in the configuration, as transformers dispatches by it at call time); the
    implementations are restored. With conv biases where the family has them.
    """
    entry = reference_of(family.name)
    model = lm_of(family, seed, conv_bias=entry.conv_bias is not None, **overrides)
    ids = ids_of(2, 9, seed)
    embeds = model.get_input_embeddings()(ids).detach()
    with torch.no_grad():
        expected = entry.logits(model, embeds, "cp")
    for attention, experts in _implementations(family, model):
        model.config._attn_implementation, model.config._experts_implementation = attention, experts
        with torch.no_grad():
            original = model.base_model(input_ids=ids).last_hidden_state
            with mamba_lrp_rules(model):
                ruled = model.base_model(input_ids=ids).last_hidden_state
                logits = head_logits(family, model, inputs_embeds=embeds)
        narrows = has_experts(family, model) and experts in entry.narrowing_experts
        context = f"{family.name} {overrides} attention={attention} experts={experts}"
        torch.testing.assert_close(ruled, original, atol=1e-5 if narrows else 1e-10, rtol=0, msg=context)
        torch.testing.assert_close(logits, expected, atol=1e-10, rtol=0, msg=context)
        assert (model.config._attn_implementation, model.config._experts_implementation) == (attention, experts)


def check_conservation_at_every_layer(
    family: ModelFamily, seed: int = 2, *, extra_rules: Mapping[type[nn.Module], Any] | None = None, **overrides: Any
) -> None:
    r"""
    CP-LRP relevances sum to an independently computed logit (1e-8) at the input and, through
    ``LayerMambaLRP``, at the embedding layer's output, at every layer's input (the previous
    layer's output) and at the last layer's output. A layer that also reads the embeddings
    (Zamba's hybrid layers) takes part of the relevance past the layers before it: their cut is the
    layer plus the embedding inputs of the later layers. ``extra_rules``: a family's rule options
    (e.g. LFM2's gate choice), checked the same way.
    """
    model = lm_of(family, seed, **overrides)
    rules = rules_for(family, "cp", extra_rules)
    ids = ids_of(2, 7, seed)
    embedding = model.get_input_embeddings()
    embeds = embedding(ids).detach()
    logit = plain_logits(family, model, inputs_embeds=embeds)[:, 3]
    relevance, delta = MambaLRP(model, rules=rules).attribute(embeds, target=3, return_convergence_delta=True)
    scale = logit.abs().clamp(min=1)
    assert torch.all((relevance.sum((1, 2)) - logit).abs() <= 1e-8 * scale)
    assert torch.all((delta - (relevance.sum((1, 2)) - logit)).abs() <= 1e-8 * scale)

    logit = plain_logits(family, model, input_ids=ids)[:, 3]  # the ids path (Falcon-H1 scales the embeddings on it)
    scale = logit.abs().clamp(min=1)

    def relevances(layer: nn.Module, to_input: bool) -> list[Tensor]:
        explainer = LayerMambaLRP(model, layer, rules=rules)
        return _parts(explainer.attribute(ids, target=3, attribute_to_layer_input=to_input))

    layers = layers_of(model)
    inputs = [relevances(layer, True) for layer in layers]
    copies = [_total(parts[1:]) if len(parts) > 1 else torch.zeros_like(logit) for parts in inputs]
    cuts = [("the embedding layer's output", _total(relevances(embedding, False)))]
    for index, parts in enumerate(inputs):
        cuts.append((f"layer {index}'s input", _total(parts) + sum(copies[index + 1 :], torch.zeros_like(logit))))
    cuts.append(("the last layer's output", _total(relevances(layers[-1], False))))
    for name, total in cuts:
        assert torch.all((total - logit).abs() <= 1e-8 * scale), f"{family.name} {overrides}: {name}"


def check_reference(
    family: ModelFamily,
    seed: int = 3,
    *,
    extra_rules: Mapping[type[nn.Module], Any] | None = None,
    reference_options: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> None:
    r"""
    Relevances equal the loop-based reference (1e-10) in each mode, and with conv biases (CP-LRP);
    the delta equals the reference's: zero for CP-LRP on bias-free models, the conv biases' share
    with them, not zero for AttnLRP. ``extra_rules``: a family's rule options (e.g. LFM2's gate
    choice), compared with the reference called with the matching ``reference_options``.
    """
    entry = reference_of(family.name)
    for conv_bias in (False, True) if entry.conv_bias is not None else (False,):
        model = lm_of(family, seed, conv_bias=conv_bias, **overrides)
        embeds = model.get_input_embeddings()(ids_of(1 if conv_bias else 2, 6, seed)).detach()
        for mode in modes_of(family) if not conv_bias else ("cp",):  # the biases' share: in the conserving mode
            expected, logit = reference_relevance(
                family.name, model, embeds, target=5, mode=mode, **(reference_options or {})
            )
            relevance, delta = MambaLRP(model, rules=rules_for(family, mode, extra_rules)).attribute(
                embeds, target=5, return_convergence_delta=True
            )
            context = f"{family.name} {overrides} {reference_options or ''} conv_bias={conv_bias} {mode}"
            torch.testing.assert_close(relevance, expected, atol=1e-10, rtol=0, msg=context)
            torch.testing.assert_close(delta, expected.sum((1, 2)) - logit, atol=1e-10, rtol=0, msg=context)
            if mode == "cp" and not conv_bias:
                assert delta.abs().max() < 1e-10, context  # conserved exactly
            else:  # the softmax rule does not conserve; the biases take their share
                assert delta.abs().max() > 1e-6, context


def check_bias_share(family: ModelFamily, seed: int = 8) -> None:
    r"""
    With every bias the family's configuration offers (convolutions, attention, MLPs, projections),
    the forward with the rules still equals the model's, and the CP-LRP delta is minus the biases'
    share of the logit, computed apart from the explainer (``bias_share.py``).
    """
    entry = reference_of(family.name)
    model = lm_of(family, seed, conv_bias=entry.conv_bias is not None, linear_bias=True)
    rules = rules_for(family, "cp")
    embeds = model.get_input_embeddings()(ids_of(1, 6, seed)).detach()
    with torch.no_grad():
        original = model.base_model(inputs_embeds=embeds).last_hidden_state
        with mamba_lrp_rules(model, overrides=rules):
            ruled = model.base_model(inputs_embeds=embeds).last_hidden_state
    torch.testing.assert_close(ruled, original, atol=1e-10, rtol=0)
    _, delta = MambaLRP(model, rules=rules).attribute(embeds, target=4, return_convergence_delta=True)
    share = bias_share(model, lambda e: head_logits(family, model, inputs_embeds=e)[0, 4], embeds, rules=rules)
    assert abs(share) > 1e-6  # the biases matter
    torch.testing.assert_close(delta, torch.tensor([-share], dtype=delta.dtype), atol=1e-10, rtol=0)


def check_batch_equals_one_by_one(family: ModelFamily, seed: int = 4, **overrides: Any) -> None:
    """A right-padded batch explains each row as it is explained alone (the default rules); pads get zero."""
    model = lm_of(family, seed, **overrides)
    ids = ids_of(3, 8, seed)
    lengths = [8, 5, 2]
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    atol = reference_of(family.name).routing_atol if has_experts(family, model) else 1e-10
    explainer = LayerMambaLRP(model, model.get_input_embeddings())
    together = explainer.attribute(ids, target=[1, 2, 3], additional_forward_args=mask).sum(-1)
    for row, length in enumerate(lengths):
        alone = explainer.attribute(ids[row : row + 1, :length], target=row + 1).sum(-1)
        torch.testing.assert_close(together[row, :length], alone[0], atol=atol, rtol=0)
        assert torch.all(together[row, length:] == 0)


def check_classifier(family: ModelFamily, seed: int = 5) -> None:
    """Classifiers (both poolings) conserve relevance under CP-LRP; the classifier's bias is the delta."""
    for name, model in classifiers_of(family, seed):
        embeds = model.get_input_embeddings()(ids_of(2, 6, seed)).detach()
        logit = plain_logits(family, model, inputs_embeds=embeds)[:, 1]
        relevance, delta = MambaLRP(model, rules=rules_for(family, "cp")).attribute(
            embeds, target=1, return_convergence_delta=True
        )
        bias = model.score.bias.detach()[1] if model.score.bias is not None else torch.zeros((), dtype=logit.dtype)
        torch.testing.assert_close(relevance.sum((1, 2)) + bias, logit, atol=1e-10, rtol=0, msg=name)
        torch.testing.assert_close(delta, -bias.expand(2), atol=1e-10, rtol=0, msg=name)


def check_model_restored(family: ModelFamily, seed: int = 6) -> None:
    """Explaining (also through canonize) leaves the model exactly as it was, also after an exception."""
    model = lm_of(family, seed)
    embeds = model.get_input_embeddings()(ids_of(2, 5, seed)).detach()
    before = snapshot(model)
    outputs = plain_logits(family, model, inputs_embeds=embeds)
    MambaLRP(model).attribute(embeds, target=0)
    LayerMambaLRP(model, layers_of(model)[0]).attribute(embeds, target=0)
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
    assert after["implementations"] == before["implementations"]
    assert all(torch.equal(after["state"][k], v) for k, v in before["state"].items())
    torch.testing.assert_close(plain_logits(family, model, inputs_embeds=embeds), outputs, atol=0, rtol=0)


def check_canonize(family: ModelFamily, seed: int = 7) -> None:
    """Captum's own LRP / LayerLRP on the canonized model give MambaLRP's / LayerMambaLRP's relevances."""
    if not family.canonizable:
        return
    model = lm_of(family, seed)
    embeds = model.get_input_embeddings()(ids_of(2, 6, seed)).detach()
    expected = MambaLRP(model).attribute(embeds, target=[2, 4])
    at_block = [LayerMambaLRP(model, block).attribute(embeds, target=[2, 4]) for block in layers_of(model)]
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
    "bias_share": check_bias_share,
    "batch_equals_one_by_one": check_batch_equals_one_by_one,
    "classifier": check_classifier,
    "model_restored": check_model_restored,
    "canonize": check_canonize,
}


def check_random_configurations(family: ModelFamily, draws: int | None = None, seed: int = 0) -> int:
    r"""
    A seeded sweep over random tiny float64 configurations of the family (sizes, layers, kernel
    sizes, heads, groups, chunk sizes, layer patterns, experts from its ``random_config``; batch,
    length, right padding, conv biases and the attention mode drawn here). Per draw: each padded
    row's relevances equal the loop-based reference of that row alone (1e-10; the routing
    tolerance where tokens are routed to experts; both relative to the row's largest relevance
    where that exceeds 1: AttnLRP on stacked attention layers with zero-centred q/k norms can give
    relevances in the hundreds that cancel to an O(1) logit), pads get zero, the delta is the
    reference's (exact conservation on bias-free CP-LRP draws), the batch equals the rows
    explained one by one, and the model is restored.

    Returns:
        *int*: the number of bias-free draws.
    """
    assert family.random_config is not None, f"{family.name} declares no random_config"
    entry = reference_of(family.name)
    draws = entry.draws if draws is None else draws
    rng = random.Random(f"{family.name}-{seed}")
    bias_free = 0
    for draw in range(draws):
        overrides = family.random_config(rng)
        conv_bias = entry.conv_bias is not None and rng.random() < 0.3
        mode = rng.choice(modes_of(family))
        bias_free += not conv_bias
        batch, length = rng.randint(1, 3), rng.randint(1, 9)
        lengths = [length] + [rng.randint(1, length) for _ in range(batch - 1)]
        context = f"{family.name} draw {draw}: {overrides}, conv_bias={conv_bias}, {mode}, lengths={lengths}"
        model = lm_of(family, draw, conv_bias=conv_bias, **overrides)
        atol = entry.routing_atol if has_experts(family, model) else 1e-10
        ids = ids_of(batch, length, draw)
        mask = torch.zeros_like(ids)
        for row, n in enumerate(lengths):
            mask[row, :n] = 1
        target = rng.randrange(VOCAB)
        before = snapshot(model)
        embeds = model.get_input_embeddings()(ids).detach()
        explainer = MambaLRP(model, rules=rules_for(family, mode))
        relevance, delta = explainer.attribute(
            embeds, target=target, additional_forward_args=mask, return_convergence_delta=True
        )
        for row, n in enumerate(lengths):
            alone = embeds[row : row + 1, :n]
            expected, logit = reference_relevance(family.name, model, alone, target, mode)
            scale = logit.abs().clamp(min=1)
            size = float(expected[0].abs().max().clamp(min=1))  # the tolerance is relative above 1
            assert (relevance[row, :n] - expected[0]).abs().max() <= atol * size, context
            assert torch.all(relevance[row, n:] == 0), context
            assert (delta[row] - (expected[0].sum() - logit[0])).abs() <= max(1e-8, atol) * scale[0], context
            if mode == "cp" and not conv_bias:
                assert (relevance[row].sum() - logit[0]).abs() <= max(1e-8, atol) * scale[0], context
            single = explainer.attribute(alone, target=target)
            assert (single[0] - relevance[row, :n]).abs().max() <= atol * size, context
        after = snapshot(model)
        assert after["forwards"] == before["forwards"] and after["modules"] == before["modules"], context
        assert after["implementations"] == before["implementations"], context
    return bias_free
