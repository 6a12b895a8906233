"""The README's code runs as written: its hub downloads are answered with tiny offline stand-ins."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, MambaForCausalLM, PreTrainedTokenizerFast

from conftest import tiny_lm

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_snippet(heading: str) -> str:
    """The first ```python block after the ``## heading`` of README.md."""
    text = README.read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def offline_hub(monkeypatch):
    """``from_pretrained`` returns a tiny float32 Mamba and a word-level tokenizer built here."""
    words = "The capital of France is Paris".split()
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    model = tiny_lm(seed=95, dtype=torch.float32)
    requested = []

    def fake_model(name, *args, **kwargs):
        requested.append(name)
        return model

    monkeypatch.setattr(MambaForCausalLM, "from_pretrained", staticmethod(fake_model))
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", staticmethod(lambda name, *a, **k: tokenizer))
    return requested


def test_swap_example_runs_and_conserves(offline_hub):
    snippet = readme_snippet("Swap IntegratedGradients for MambaLRP")
    assert "IntegratedGradients(next_token_logits)" in snippet and "MambaLRP(next_token_logits" in snippet
    namespace: dict = {}
    exec(compile(snippet, str(README), "exec"), namespace)
    assert offline_hub == ["state-spaces/mamba-130m-hf"]
    model, embeds, target = namespace["model"], namespace["embeds"], namespace["target"]
    attributions, delta = namespace["attributions"], namespace["delta"]
    logit = model(inputs_embeds=embeds).logits[0, -1, target]
    assert float(attributions.sum() - delta) == pytest.approx(float(logit), abs=1e-5)
    # the LayerMambaLRP line of the snippet: the same relevances from token ids
    torch.testing.assert_close(namespace["token_relevance"], attributions.sum(-1), atol=1e-6, rtol=1e-6)
    # and the commented-out line is the swap: IntegratedGradients takes the same arguments
    swapped = snippet.replace(
        "# attributions = IntegratedGradients(model)", "attributions = IntegratedGradients(model)"
    )
    swapped = swapped.replace("attributions, delta = MambaLRP", "_, delta = MambaLRP")
    exec(compile(swapped, str(README), "exec"), namespace)
    assert namespace["attributions"].shape == embeds.shape
