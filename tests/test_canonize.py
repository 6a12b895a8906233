"""Captum's own LRP engine on canonized Mamba models reproduces MambaLRP (issue 6, item 3)."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LRP, LayerLRP
from captum.attr._core import lrp as captum_lrp
from captum.attr._utils.custom_modules import Addition_Module
from captum.attr._utils.lrp_rules import EpsilonRule
from torch import nn

from captum_mamba import DEFAULT_REGISTRY, LayerMambaLRP, MambaLRP, canonize
from captum_mamba.canonizers import (
    LEAF_TYPES,
    FanOut,
    GateProduct,
    RMSNormLeaf,
    SiLULeaf,
    UnsupportedCanonizationError,
)
from captum_mamba.evaluation import ExplainedLogits, ablated_rules
from captum_mamba.heads import TokenPooling
from captum_mamba.rules import GateHalfRule, GradientRule, MixerRule, RMSNormRule, SiLUIdentityRule

from conftest import cached_states, embeddings_of, tiny_classifier, tiny_lm, token_ids

pytestmark = [
    pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients"),
    pytest.mark.filterwarnings("ignore:Input Tensor 0 has a dtype of torch.int64"),
]

TARGETS = [5, 17]


@pytest.fixture(autouse=True)
def one_thread():
    """float64 depthwise conv1d is ~1000x slower with 2 threads on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_relatively_close(actual: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-10) -> None:
    """max |actual - expected| <= tolerance * max |expected| (the issue asks 1e-6; float64 gives ~1e-15)."""
    scale = expected.abs().max()
    error = (actual.detach() - expected).abs().max()
    assert error <= tolerance * scale, f"max abs diff {error:.3e} exceeds {tolerance:g} x {scale:.3e}"


def padded_mask(ids: torch.Tensor) -> torch.Tensor:
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0  # right padding in the first row
    return mask


@pytest.mark.parametrize("family", ["mamba", "mamba2", "falcon_mamba"])
def test_lrp_on_canonized_lm_equals_mamba_lrp(family):
    model = tiny_lm(seed=40, family=family)
    embeds = embeddings_of(model, token_ids())
    expected, expected_delta = MambaLRP(model).attribute(embeds, target=TARGETS, return_convergence_delta=True)
    with canonize(model):
        relevance, delta = LRP(ExplainedLogits(model)).attribute(embeds, target=TARGETS, return_convergence_delta=True)
    assert_relatively_close(relevance, expected)
    torch.testing.assert_close(delta.detach(), -expected_delta, atol=1e-6, rtol=0)  # Captum: output - sum


@pytest.mark.parametrize("family, pooling", [("mamba", "mean"), ("mamba", "last"), ("mamba2", "mean")])
def test_lrp_on_canonized_classifier_equals_mamba_lrp(family, pooling):
    model = tiny_classifier(seed=41, pooling=pooling, family=family)
    ids = token_ids()
    mask = padded_mask(ids)
    embeds = embeddings_of(model, ids)
    expected = MambaLRP(model).attribute(embeds, target=[2, 0], additional_forward_args=mask)
    with canonize(model):
        relevance = LRP(ExplainedLogits(model)).attribute(embeds, target=[2, 0], additional_forward_args=mask)
    assert_relatively_close(relevance, expected)
    assert relevance[0, -3:].abs().max() == 0  # padding gets nothing


@pytest.mark.parametrize("kind, family", [("lm", "mamba"), ("classifier", "mamba"), ("lm", "mamba2")])
def test_layer_lrp_equals_layer_mamba_lrp_and_conserves_at_every_block(kind, family):
    build = tiny_lm if kind == "lm" else tiny_classifier
    model = build(seed=42, num_hidden_layers=3, family=family)
    target = TARGETS if kind == "lm" else [1, 2]
    embeds = embeddings_of(model, token_ids())
    forward = ExplainedLogits(model)
    blocks = list(model.backbone.layers)
    expected = {
        (index, to_input): LayerMambaLRP(model, block).attribute(
            embeds, target=target, attribute_to_layer_input=to_input
        )
        for index, block in enumerate(blocks)
        for to_input in (False, True)
    }
    expected_mixer = [LayerMambaLRP(model, block.mixer).attribute(embeds, target=target) for block in blocks]
    with canonize(model) as canonization:
        assert canonization.blocks == blocks
        logits = forward(embeds).detach()[torch.arange(2), target]  # float64 also for the LM (never narrowed)
        for (index, to_input), reference in expected.items():
            relevance, delta = LayerLRP(forward, blocks[index]).attribute(
                embeds, target=target, attribute_to_layer_input=to_input, return_convergence_delta=True
            )
            assert_relatively_close(relevance, reference)
            torch.testing.assert_close(relevance.detach().sum((1, 2)), logits, atol=1e-9, rtol=0)
            assert delta.abs().max() < 1e-9
        for block, reference in zip(blocks, expected_mixer):
            assert_relatively_close(LayerLRP(forward, block.mixer.out_proj).attribute(embeds, target=target), reference)


def test_fan_out_gives_each_reader_of_the_residual_stream_its_own_relevance():
    model = tiny_lm(seed=43)
    embeds = embeddings_of(model, token_ids())
    block = model.backbone.layers[1]
    expected = LayerMambaLRP(model, block.norm).attribute(embeds, target=TARGETS, attribute_to_layer_input=True)
    stream = LayerMambaLRP(model, block).attribute(embeds, target=TARGETS, attribute_to_layer_input=True)
    forward = ExplainedLogits(model)
    with canonize(model):
        norm_input = LayerLRP(forward, block.norm).attribute(embeds, target=TARGETS, attribute_to_layer_input=True)
        block_input = LayerLRP(forward, block).attribute(embeds, target=TARGETS, attribute_to_layer_input=True)
    assert_relatively_close(norm_input, expected)
    assert_relatively_close(block_input, stream)  # the fan-out sums its readers' relevances back
    assert (stream - expected).abs().max() > 1e-3 * expected.abs().max()  # two readers, different shares


def test_non_linear_leaves_set_their_relevance_by_the_mamba_lrp_rules():
    model = tiny_lm(seed=44)
    embeds = embeddings_of(model, token_ids())
    mixer = model.backbone.layers[0].mixer
    forward = ExplainedLogits(model)
    with canonize(model):
        for silu in (mixer.act, mixer.gate_act):
            out = LayerLRP(forward, silu).attribute(embeds, target=TARGETS)
            into = LayerLRP(forward, silu).attribute(embeds, target=TARGETS, attribute_to_layer_input=True)
            assert_relatively_close(into, out)  # R_in = R_out element-wise
            assert out.abs().max() > 0
        product = LayerLRP(forward, mixer.gate).attribute(embeds, target=TARGETS)
        factors = LayerLRP(forward, mixer.gate).attribute(embeds, target=TARGETS, attribute_to_layer_input=True)
        assert len(factors) == 2
        for factor in factors:  # each factor of y * silu(z) gets half
            assert_relatively_close(factor, 0.5 * product)


def test_rules_come_from_captum_registry_with_torch_defaults_untouched():
    registry = captum_lrp.SUPPORTED_LAYERS_WITH_RULES
    outside = dict(registry)
    assert not set(LEAF_TYPES) & set(outside)  # importing the package changed nothing
    with canonize(tiny_lm(seed=45)):
        inside = dict(registry)
    assert dict(registry) == outside  # restored on exit
    for leaf_type in LEAF_TYPES:
        assert inside[leaf_type] is leaf_type.default_rule
    assert inside[SiLULeaf] is SiLUIdentityRule and inside[GateProduct] is GateHalfRule
    assert inside[RMSNormLeaf] is RMSNormRule and inside[TokenPooling] is GradientRule
    registry = inside
    others = {key: value for key, value in registry.items() if key not in (*LEAF_TYPES, TokenPooling)}
    assert others == {
        nn.MaxPool1d: EpsilonRule,
        nn.MaxPool2d: EpsilonRule,
        nn.MaxPool3d: EpsilonRule,
        nn.Conv2d: EpsilonRule,
        nn.AvgPool2d: EpsilonRule,
        nn.AdaptiveAvgPool2d: EpsilonRule,
        nn.Linear: EpsilonRule,
        nn.BatchNorm2d: EpsilonRule,
        Addition_Module: EpsilonRule,
    }
    model = tiny_lm(seed=45)
    with canonize(model) as canonization:
        assert not any(hasattr(leaf, "rule") for leaf in canonization.leaves.values())  # nothing pinned
        LRP(ExplainedLogits(model)).attribute(embeddings_of(model, token_ids()), target=TARGETS)
        for leaf in canonization.leaves.values():
            assert type(leaf.rule) is registry[type(leaf)]


def test_second_attribute_call_gives_the_same_relevance_although_captum_deletes_rules():
    model = tiny_lm(seed=46)
    embeds = embeddings_of(model, token_ids())
    forward = ExplainedLogits(model)
    block = model.backbone.layers[1]
    with canonize(model):
        explainer, layer_explainer = LRP(forward), LayerLRP(forward, block)
        first = explainer.attribute(embeds, target=TARGETS)
        layer_first = layer_explainer.attribute(embeds, target=TARGETS)
        assert isinstance(block.mixer.gate.rule, GateHalfRule)  # Captum's `del layer.rule` (captum#1059) kept it
        second = explainer.attribute(embeds, target=TARGETS)
        layer_second = layer_explainer.attribute(embeds, target=TARGETS)
    assert torch.equal(first, second) and torch.equal(layer_first, layer_second)


def test_rule_set_on_an_original_linear_is_carried_over_and_survives_attribute_calls():
    model = tiny_lm(seed=46)
    embeds = embeddings_of(model, token_ids())
    default = MambaLRP(model).attribute(embeds, target=TARGETS)
    user_rule = EpsilonRule(epsilon=0.5)
    model.lm_head.rule = user_rule
    with canonize(model):
        assert isinstance(model.lm_head.rule, EpsilonRule) and model.lm_head.rule is not user_rule
        explainer = LRP(ExplainedLogits(model))
        first, second = (explainer.attribute(embeds, target=TARGETS) for _ in range(2))
    assert torch.equal(first, second)
    assert (first - default).abs().max() > 1e-3 * default.abs().max()  # LRP-epsilon on the head, not LRP-0
    assert model.lm_head.rule is user_rule


def test_pinned_rules_give_the_ablations_of_mamba_lrp_on_every_call(float64_faithful_hf):
    # the fixture: MambaLRP's norm ablation runs HF's own RMSNorm, which narrows float64 to float32
    model = tiny_lm(seed=47)
    embeds = embeddings_of(model, token_ids())
    expected = MambaLRP(model, rules=ablated_rules(model, {"silu", "gate", "norm"})).attribute(embeds, target=TARGETS)
    default = MambaLRP(model).attribute(embeds, target=TARGETS)
    pinned = {SiLULeaf: GradientRule, GateProduct: GradientRule(), RMSNormLeaf: GradientRule}
    with canonize(model, rules=pinned) as canonization:
        explainer = LRP(ExplainedLogits(model))
        results = [explainer.attribute(embeds, target=TARGETS) for _ in range(2)]
        gates = [leaf for leaf in canonization.leaves.values() if isinstance(leaf, GateProduct)]
        assert gates[0].rule is not gates[1].rule  # one rule instance per leaf
    for relevance in results:
        assert_relatively_close(relevance, expected)
    assert (results[0] - default).abs().max() > 1e-3 * default.abs().max()


@pytest.mark.parametrize("family", ["mamba", "mamba2", "falcon_mamba"])
def test_canonized_forward_equals_original(family, float64_faithful_hf):
    ids = token_ids()
    lm = tiny_lm(seed=48, use_conv_bias=True, family=family)
    classifier = tiny_classifier(seed=48, classifier_bias=True, use_conv_bias=True, family=family)
    mask = padded_mask(ids)
    with torch.no_grad():
        hidden = lm.backbone(input_ids=ids).last_hidden_state
        expected_lm = lm.lm_head(hidden)  # HF's own head narrows float64 logits to float32
        expected_classifier = classifier(input_ids=ids, attention_mask=mask).logits
        with canonize(lm), canonize(classifier):
            canonized_hidden = lm.backbone(input_ids=ids).last_hidden_state
            canonized_lm = lm(input_ids=ids).logits
            explained_lm = ExplainedLogits(lm)(lm.get_input_embeddings()(ids))
            canonized_classifier = classifier(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(canonized_hidden, hidden, atol=1e-10, rtol=0)
    torch.testing.assert_close(canonized_lm, expected_lm.float(), atol=1e-6, rtol=0)  # HF's own forward runs
    assert explained_lm.dtype == torch.float64  # ... and the explained logits are read before its narrowing
    torch.testing.assert_close(explained_lm, expected_lm[:, -1], atol=1e-10, rtol=0)
    torch.testing.assert_close(canonized_classifier, expected_classifier, atol=1e-10, rtol=0)


@pytest.mark.parametrize("family", ["mamba", "mamba2"])
def test_canonized_lm_fills_a_prefill_cache_like_the_original(family):
    model = tiny_lm(seed=49, dtype=torch.float32, family=family)
    ids = token_ids()
    with torch.no_grad():
        original = model(input_ids=ids, use_cache=True)
        with canonize(model):
            canonized = model(input_ids=ids, use_cache=True)
    torch.testing.assert_close(canonized.logits, original.logits, atol=1e-5, rtol=0)
    for layer in range(model.config.num_hidden_layers):
        for ours, theirs in zip(cached_states(canonized, layer), cached_states(original, layer)):
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def model_snapshot(model: nn.Module) -> dict:
    return {
        "modules": [(name, id(module)) for name, module in model.named_modules()],
        "parameters": [(name, id(parameter)) for name, parameter in model.named_parameters()],
        "state": {name: tensor.clone() for name, tensor in model.state_dict().items()},
        "attributes": [(name, sorted(vars(module))) for name, module in model.named_modules()],
        "forwards": [name for name, module in model.named_modules() if "forward" in vars(module)],
        "hooks": [
            (name, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks), len(m._backward_pre_hooks))
            for name, m in model.named_modules()
        ],
    }


def assert_restored(model: nn.Module, before: dict, embeds: torch.Tensor, outputs: torch.Tensor) -> None:
    after = model_snapshot(model)
    for key in ("modules", "parameters", "attributes", "forwards", "hooks"):
        assert after[key] == before[key], key
    assert after["state"].keys() == before["state"].keys()
    assert all(torch.equal(after["state"][name], tensor) for name, tensor in before["state"].items())
    with torch.no_grad():
        assert torch.equal(model(inputs_embeds=embeds).logits, outputs)


class WithExtraHead(nn.Module):
    """A user's module around the model, with a torch leaf that Captum's own rules handle."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.logits = ExplainedLogits(model)
        self.head = nn.Linear(model.config.vocab_size, 3, bias=False, dtype=torch.float64)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.head(self.logits(embeds))


def test_model_is_restored_exactly_after_attributions():
    model = tiny_lm(seed=50)
    wrapper = WithExtraHead(model)
    user_rule = EpsilonRule(1e-6)
    wrapper.head.rule = user_rule
    embeds = embeddings_of(model, token_ids())
    with torch.no_grad():
        outputs = model(inputs_embeds=embeds).logits
    before, wrapper_before = model_snapshot(model), model_snapshot(wrapper)
    with canonize(wrapper):
        assert wrapper.state_dict().keys() == wrapper_before["state"].keys()  # leaves share the parameters, same names
        LRP(wrapper).attribute(embeds, target=[0, 2])
        LayerLRP(wrapper, model.backbone.layers[1]).attribute(embeds, target=[0, 2])
        assert "activations" in vars(wrapper.head)  # what Captum leaves on a torch layer ...
        assert not hasattr(wrapper.head, "rule")  # ... and what it deletes (captum#1059)
    assert "activations" not in vars(wrapper.head)  # are cleared / put back on exit
    assert wrapper.head.rule is user_rule
    assert_restored(model, before, embeds, outputs)
    assert model_snapshot(wrapper)["attributes"] == wrapper_before["attributes"]


def test_model_is_restored_after_an_exception_inside():
    model = tiny_lm(seed=51)
    embeds = embeddings_of(model, token_ids())
    with torch.no_grad():
        outputs = model(inputs_embeds=embeds).logits
    before = model_snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        with canonize(model):
            LRP(ExplainedLogits(model)).attribute(embeds, target=TARGETS)
            raise RuntimeError("boom")
    assert_restored(model, before, embeds, outputs)


def test_token_ids_reaching_captum_lrp_raise_a_clear_error_and_restore():
    model = tiny_lm(seed=52)
    ids = token_ids()
    embeds = embeddings_of(model, ids)
    with torch.no_grad():
        outputs = model(inputs_embeds=embeds).logits
    before = model_snapshot(model)
    with canonize(model):
        with pytest.raises(TypeError, match="inputs_embeds"):
            LayerLRP(model, model.backbone.layers[0]).attribute(ids, target=(ids.shape[1] - 1, 3))
    assert_restored(model, before, embeds, outputs)


class OtherMixer(nn.Module):
    """A mixer type MambaLRP has a rule for (as for mamba-ssm's) but canonize does not restructure."""

    def __init__(self) -> None:
        super().__init__()
        self.in_proj = nn.Linear(2, 2)


def test_unsupported_models_raise_clear_errors():
    hybrid = tiny_lm(seed=53)
    hybrid.backbone.layers[1].mixer = OtherMixer()
    with DEFAULT_REGISTRY.registered(OtherMixer, MixerRule):
        with pytest.raises(UnsupportedCanonizationError, match=r"OtherMixer \(at backbone.layers.1.mixer\).*MambaLRP"):
            with canonize(hybrid):
                pass
    with pytest.raises(ValueError, match="SiLU mixers only.*gelu"):
        with canonize(tiny_lm(seed=53, hidden_act="gelu")):
            pass
    with pytest.raises(UnsupportedCanonizationError, match="no module of a declared model family"):
        with canonize(nn.Sequential(nn.Linear(3, 3))):
            pass
    model = tiny_lm(seed=53)
    model.backbone.layers[0].mixer.extra = nn.Conv1d(2, 2, 1)  # a leaf Captum has no rule for
    before = model_snapshot(model)
    with pytest.raises(UnsupportedCanonizationError, match=r"Conv1d \(at backbone.layers.0.mixer.extra\)"):
        with canonize(model):
            pass
    assert model_snapshot(model)["modules"] == before["modules"]
    del model.backbone.layers[0].mixer.extra
    with canonize(model):
        with pytest.raises(ValueError, match="already canonized"):
            with canonize(model):
                pass
    with pytest.raises(TypeError, match="canonical leaf types"):
        with canonize(model, rules={nn.Linear: EpsilonRule}):
            pass
    assert not any(isinstance(m, FanOut) for m in model.modules())
