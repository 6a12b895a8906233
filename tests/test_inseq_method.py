"""MambaLRP as an inseq attribution method ("mamba_lrp"), on a tiny Hugging Face Mamba LM."""

from __future__ import annotations

import pytest
import torch

inseq = pytest.importorskip("inseq")

from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import MambaConfig, MambaForCausalLM, PreTrainedTokenizerFast  # noqa: E402

from captum_mamba import MambaLRP  # noqa: E402
from captum_mamba.inseq_method import INSEQ_METHOD_NAME, register_inseq_method  # noqa: E402

WORDS = "the a cat dog sat ran on in mat park big small red blue and is".split()
PROMPT = "the big cat sat on the"


@pytest.fixture(scope="module")
def lm():
    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, "[EOS]": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]"
    )
    torch.manual_seed(0)
    config = MambaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        state_size=8,
        num_hidden_layers=2,
        use_cache=False,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    return MambaForCausalLM(config).eval(), tokenizer


def test_registered_once_and_listed():
    method = register_inseq_method()
    assert register_inseq_method() is method and method.method_name == INSEQ_METHOD_NAME
    assert INSEQ_METHOD_NAME in inseq.list_feature_attribution_methods()


def test_inseq_relevances_are_mamba_lrp_and_sum_to_the_logits(lm):
    model, tokenizer = lm
    register_inseq_method()
    explainer = inseq.load_model(model, INSEQ_METHOD_NAME, tokenizer=tokenizer)
    assert explainer.default_attributed_fn_id == "logit"
    lean = inseq.load_model(model, INSEQ_METHOD_NAME, tokenizer=tokenizer, memory_lean=True)
    assert lean.attribution_method.method.options.checkpoint_blocks  # keyword arguments reach MambaLRP
    target = PROMPT + " mat and"
    out = explainer.attribute(
        PROMPT,
        target,
        step_scores=["logit"],
        attribution_args={"return_convergence_delta": True},
        show_progress=False,
    )
    (sequence,) = out.sequence_attributions
    relevance = sequence.target_attributions.sum(-1)  # (target positions, generated steps)
    ids = torch.tensor([tokenizer.encode(target)])
    prompt_length = len(tokenizer.encode(PROMPT))
    assert relevance.shape == (ids.shape[1], 2)
    embeds = model.get_input_embeddings()(ids).detach()
    for step in range(2):
        end = prompt_length + step  # the step explains the token at `end` from the tokens before it
        logit = float(sequence.step_scores["logit"][step])
        with torch.no_grad():
            assert logit == pytest.approx(float(model(ids[:, :end]).logits[0, -1, ids[0, end]]), abs=1e-5)
        column = relevance[:end, step]
        delta = float(sequence.step_scores["deltas"][step])
        assert float(column.sum()) - delta == pytest.approx(logit, abs=1e-4)  # conservation, through inseq
        direct = MambaLRP(model).attribute(embeds[:, :end], target=int(ids[0, end]), explained_position=-1)
        torch.testing.assert_close(column.float(), direct[0].sum(-1).float(), atol=1e-5, rtol=1e-4)
        assert torch.isnan(relevance[end:, step]).all()  # inseq's padding: tokens not yet generated
