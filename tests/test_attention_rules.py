"""Attention rules (AttnLRP, CP-LRP) at transformers' attention interface: what is particular to them, on tiny
Llama, Qwen3 and Bamba models.

The shared family suite (``family_checks.py``) checks every family's forward with the rules, its
relevances against the loop-based reference of ``reference_attention.py`` in both modes,
conservation at every layer and right-padded batches; here: the negative controls, choosing
CP-LRP per module, clear errors, Captum's LLM attribution and NoiseTunnel, and the relevance
split by layer kind.
"""

from __future__ import annotations

import pytest
import torch

from captum_mamba import LayerMambaLRP, MambaLRP, UnsupportedModuleError
from captum_mamba.rules import GradientRule
from captum_mamba.rules.attention import AttentionRule

from conftest import FAMILIES
from family_checks import attention_types, ids_of, lm_of, plain_logits, rules_for
from family_references import reference_relevance

NAMES = ["llama", "qwen3", "bamba"]

pytestmark = pytest.mark.usefixtures("float64_faithful_hf")


def build(name: str, seed: int = 0, **overrides) -> torch.nn.Module:
    return lm_of(FAMILIES[name], seed, **overrides)


def embeds_of(model: torch.nn.Module, batch: int, length: int, seed: int) -> torch.Tensor:
    return model.get_input_embeddings()(ids_of(batch, length, seed)).detach()


def _explainer(name: str, model: torch.nn.Module, mode: str, **kwargs) -> MambaLRP:
    return MambaLRP(model, rules=rules_for(FAMILIES[name], mode), **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_negative_controls(name):
    model = build(name, seed=4)
    embeds = embeds_of(model, 2, 6, seed=4)
    expected, logit = reference_relevance(name, model, embeds, target=1, mode="attnlrp")
    leaf = embeds.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(model(inputs_embeds=leaf).logits[:, -1, 1].sum(), leaf)
    plain = (leaf * gradient).detach()
    assert ((plain.sum((1, 2)) - logit).abs() > 0.1 * logit.abs()).any()  # Gradient x Input misses the logit
    without_rule = {kind: GradientRule() for kind in attention_types(FAMILIES[name])}
    without_attention_rule = MambaLRP(model, rules=without_rule).attribute(embeds, target=1)
    assert (without_attention_rule - expected).abs().max() > 1e-4  # dropping the rule breaks the equality


def test_cp_lrp_can_be_chosen_per_module():
    model = build("llama", seed=6)
    embeds = embeds_of(model, 1, 5, seed=6)
    first, second = (layer.self_attn for layer in model.model.layers)
    first.rule = AttentionRule("cp")  # Captum's convention: a module's own rule wins
    try:
        plan = MambaLRP(model).rule_plan()
        assert plan.rules["model.layers.0.self_attn"].mode == "cp"
        assert plan.rules["model.layers.1.self_attn"].mode == "attnlrp"
        mixed = MambaLRP(model).attribute(embeds, target=0)
    finally:
        del first.rule
    everywhere_cp = _explainer("llama", model, "cp").attribute(embeds, target=0)
    everywhere_attnlrp = _explainer("llama", model, "attnlrp").attribute(embeds, target=0)
    assert (mixed - everywhere_cp).abs().max() > 1e-8 and (mixed - everywhere_attnlrp).abs().max() > 1e-8


def test_unknown_mode_and_unsupported_module_are_clear():
    with pytest.raises(ValueError, match="mode must be one of"):
        AttentionRule("softmax")

    class Mystery(torch.nn.Module):
        def forward(self, x):
            return x

    model = build("llama", seed=7)
    model.model.layers[0].mystery = torch.nn.Linear(2, 2)
    model.model.layers[0].extra = Mystery()
    model.model.layers[0].extra.weight = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(UnsupportedModuleError, match=r"Mystery.*model\.layers\.0\.extra.*register_rule"):
        MambaLRP(model).attribute(embeds_of(model, 1, 3, seed=7), target=0)


@pytest.mark.parametrize("name", NAMES)
def test_captum_llm_attribution_and_noise_tunnel(name):
    from captum.attr import LLMGradientAttribution, NoiseTunnel, TextTokenInput
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from captum_mamba.llm import MambaLLMAttribution

    words = "the cat sat on mat a dog ran".split()
    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, "[EOS]": 3, **{w: i + 4 for i, w in enumerate(words)}}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token="[PAD]", unk_token="[UNK]")
    model = build(name, seed=8)
    cp = rules_for(FAMILIES[name], "cp")
    layer = LayerMambaLRP(model, model.get_input_embeddings(), rules=cp)
    captum_result = LLMGradientAttribution(layer, tokenizer).attribute(
        TextTokenInput("the cat sat on the", tokenizer), target="mat a"
    )
    assert captum_result.token_attr.shape == (2, 5) and torch.isfinite(captum_result.token_attr).all()
    ours = MambaLLMAttribution(model, tokenizer, explain="logit", rules=cp).attribute(
        TextTokenInput("the cat sat on the", tokenizer), target="mat"
    )
    ids = torch.tensor([tokenizer.encode("the cat sat on the")])
    # explained logits (not log-probabilities): CP-LRP relevances sum to them exactly
    logit = plain_logits(FAMILIES[name], model, input_ids=ids)[0, vocab["mat"]]
    torch.testing.assert_close(ours.seq_attr.sum().double(), logit, atol=1e-8, rtol=0)
    embeds = embeds_of(model, 1, 5, seed=8)
    smoothed = NoiseTunnel(_explainer(name, model, "attnlrp")).attribute(
        embeds, target=2, nt_type="smoothgrad", nt_samples=3, stdevs=0.01
    )
    assert smoothed.shape == embeds.shape and torch.isfinite(smoothed).all()


def test_relevance_split_by_layer_kind_equals_layer_mamba_lrp_per_module():
    from captum_mamba import relevance_split

    model = build("bamba", seed=9)
    embeds = embeds_of(model, 2, 6, seed=9)
    rules = rules_for(FAMILIES["bamba"], "cp")
    rows = relevance_split(MambaLRP(model, rules=rules), embeds, target=3)
    assert [(row.layer, row.kind) for row in rows] == [
        (0, "ssm"),
        (0, "mlp"),
        (1, "attention"),
        (1, "mlp"),
        (2, "ssm"),
        (2, "mlp"),
    ]
    modules = dict(model.named_modules())
    for row in rows:
        alone = LayerMambaLRP(model, modules[row.module], rules=rules).attribute(embeds, target=3)
        alone = alone[0] if isinstance(alone, tuple) else alone
        torch.testing.assert_close(row.relevance, alone.sum((1, 2)), atol=1e-10, rtol=0)
