"""Captum's LLM attribution API (LLMGradientAttribution, TextTokenInput, TextTemplateInput) with MambaLRP."""

from __future__ import annotations

import matplotlib
import pytest
import torch
from captum.attr import LayerGradientXActivation, LLMGradientAttribution, TextTemplateInput, TextTokenInput
from captum.attr._core.llm_attr import _convert_ids_to_pretty_tokens
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from captum_mamba import LayerMambaLRP
from captum_mamba.llm import MambaLLMAttribution

from conftest import FAMILIES, tiny_lm
from family_checks import attention_types

matplotlib.use("Agg")

WORDS = "the cat sat on mat a dog ran in park big small red blue".split()

#: The families without attention, whose default rules all conserve (the attention families' LLM
#: attribution, with CP-LRP: ``test_attention_rules.py``).
SSM_FAMILIES = [name for name, family in FAMILIES.items() if not attention_types(family)]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, "[EOS]": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=word_level, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]"
    )


def _ids(tokenizer, text: str) -> torch.Tensor:
    return torch.tensor([tokenizer.encode(text)])


def _direct(model, ids: torch.Tensor, target: int, log_prob: bool) -> torch.Tensor:
    """LayerMambaLRP called by hand on the same prefix: the reference for the Captum wrapper."""

    def explained(input_ids: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids).logits[:, -1]
        return (logits.log_softmax(-1) if log_prob else logits)[:, target]

    return LayerMambaLRP(explained, model.get_input_embeddings(), model=model).attribute(ids).sum(-1)[0]


@pytest.mark.parametrize("family", SSM_FAMILIES)
def test_captum_llm_gradient_attribution_with_layer_mamba_lrp(family, tokenizer):
    model = tiny_lm(seed=81, family=family)
    llm = LLMGradientAttribution(LayerMambaLRP(model, model.get_input_embeddings()), tokenizer)
    assert isinstance(llm.attr_method, LayerGradientXActivation)
    result = llm.attribute(TextTokenInput("the cat sat on the", tokenizer), target="mat a")
    assert result.output_tokens == ["mat", "a"] and result.input_tokens == ["the", "cat", "sat", "on", "the"]
    full = _ids(tokenizer, "the cat sat on the mat a")
    for step in range(2):
        expected = _direct(model, full[:, : 5 + step], int(full[0, 5 + step]), log_prob=True)
        torch.testing.assert_close(result.token_attr[step], expected[:5].to(result.token_attr), atol=1e-10, rtol=0)
    torch.testing.assert_close(result.seq_attr, result.token_attr.sum(0))


@pytest.mark.parametrize("family", SSM_FAMILIES)
def test_explained_logits_conserve_relevance(family, tokenizer, float64_faithful_hf):
    model = tiny_lm(seed=82, family=family)
    result = MambaLLMAttribution(model, tokenizer, explain="logit").attribute(
        TextTokenInput("the cat sat on the", tokenizer), target="mat a dog"
    )
    full = _ids(tokenizer, "the cat sat on the mat a dog")
    with torch.no_grad():  # float64 logits (the HF head itself casts them to float32)
        logits = model.lm_head(model.backbone(full).last_hidden_state)[0]
    for step in range(3):
        expected = _direct(model, full[:, : 5 + step], int(full[0, 5 + step]), log_prob=False)
        torch.testing.assert_close(result.token_attr[step], expected[:5].to(result.token_attr), atol=1e-10, rtol=0)
        # the prompt and the earlier target tokens together carry the whole logit
        logit = float(logits[4 + step, full[0, 5 + step]])
        assert float(expected.sum()) == pytest.approx(logit, abs=1e-8)


def test_generated_target_is_the_greedy_continuation(tokenizer):
    model = tiny_lm(seed=83)
    prompt = "the dog ran in the"
    result = MambaLLMAttribution(model, tokenizer).attribute(
        TextTokenInput(prompt, tokenizer), gen_args={"max_new_tokens": 3, "do_sample": False}
    )
    greedy = model.generate(_ids(tokenizer, prompt), max_new_tokens=3, do_sample=False)[0, 5:]
    assert result.token_attr.shape == (3, 5)
    assert result.output_tokens == _convert_ids_to_pretty_tokens(greedy, tokenizer)


def test_template_values_get_the_relevance_of_their_tokens(tokenizer):
    model = tiny_lm(seed=84, family="mamba2")
    llm = MambaLLMAttribution(model, tokenizer, explain="logit")
    template = llm.attribute(TextTemplateInput("{} cat sat on {}", values=["the big", "a"]), target="mat")
    tokens = llm.attribute(TextTokenInput("the big cat sat on a", tokenizer), target="mat")
    assert template.input_tokens == ["the big", "a"]
    expected = torch.stack([tokens.seq_attr[:2].sum(), tokens.seq_attr[5]])
    torch.testing.assert_close(template.seq_attr, expected, atol=1e-12, rtol=0)
    keyed = llm.attribute(TextTemplateInput("{x} cat sat on {y}", values={"x": "the big", "y": "a"}), target="mat")
    assert keyed.input_tokens == ["x", "y"]
    torch.testing.assert_close(keyed.seq_attr, expected, atol=1e-12, rtol=0)


def test_plots_render(tokenizer):
    model = tiny_lm(seed=85, family="falcon_mamba")
    result = MambaLLMAttribution(model, tokenizer, explain="logit").attribute(
        TextTokenInput("a red cat sat", tokenizer), target="on the mat"
    )
    token_figure, _ = result.plot_token_attr()
    seq_figure, _ = result.plot_seq_attr()
    assert token_figure.axes and seq_figure.axes


def test_bad_arguments(tokenizer):
    model = tiny_lm(seed=86)
    with pytest.raises(ValueError, match="explain must be one of"):
        MambaLLMAttribution(model, tokenizer, explain="probability")
    with pytest.raises(TypeError, match="get_input_embeddings"):
        MambaLLMAttribution(torch.nn.Linear(2, 2), tokenizer)
    masked = TextTemplateInput("{} cat {}", values=["the", "a"], mask=[0, 0])
    with pytest.raises(ValueError, match="feature mask"):
        MambaLLMAttribution(model, tokenizer).attribute(masked, target="sat")
