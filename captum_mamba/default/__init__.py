"""The embedded default model: a small Mamba sentiment classifier, shipped with the package.

A 2-layer Mamba (hidden size 64) with mean pooling and a linear head, trained on the Rotten
Tomatoes sentence-polarity data (Pang & Lee, 2005) with a word-level tokenizer; it loads offline
and runs on CPU in milliseconds, so examples, tests and tutorials can explain a real trained
model. ``assets/MODEL_CARD.md`` documents the data, split, hyper-parameters and held-out
accuracy; ``captum-mamba train default`` rebuilds it.

Example::

    >>> from captum_mamba.default import SAMPLE_SENTENCES, encode, load_default_classifier
    >>> model, tokenizer = load_default_classifier()
    >>> input_ids, attention_mask = encode(tokenizer, SAMPLE_SENTENCES)
    >>> logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer
from torch import Tensor
from transformers.utils import logging as hf_logging

from captum_mamba.heads import MambaForSequenceClassification

ASSETS_DIR: Path = Path(__file__).resolve().parent / "assets"
"""Folder of the shipped model: ``config.json``, ``model.safetensors``, ``tokenizer.json``, ``MODEL_CARD.md``, ``metrics.json``."""

LABELS: tuple[str, str] = ("negative", "positive")
"""Class names, indexed by the model's output logits."""

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
PAD_ID = 0

SAMPLE_SENTENCES: list[str] = [
    "a gorgeous , witty and deeply moving film .",
    "a dull , lifeless and boring mess .",
    "the acting is wonderful , but the plot is a tedious mess .",
    "one of the best films of the year .",
]
"""Built-in example sentences: the first is clearly positive, the second clearly negative, the
third mixed, the fourth positive. Lower-cased and space-tokenized like the training data."""

SAMPLE_LABELS: tuple[int | None, ...] = (1, 0, None, 1)
"""Expected class of each of :data:`SAMPLE_SENTENCES` (``None``: mixed, no expectation)."""


def load_default_classifier(
    dtype: torch.dtype = torch.float32,
) -> tuple[MambaForSequenceClassification, Tokenizer]:
    r"""
    Load the shipped sentiment classifier and its tokenizer, offline.

    Args:
        dtype (torch.dtype, optional): floating-point type of the model's parameters.
                    Default: ``torch.float32``

    Returns:
        *tuple* ``(model, tokenizer)``: the
        :class:`~captum_mamba.heads.MambaForSequenceClassification` in eval mode, on CPU, with
        ``model.config.id2label == {0: "negative", 1: "positive"}``, and its
        ``tokenizers.Tokenizer`` (use :func:`encode` to make model inputs).
    """
    progress_bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = MambaForSequenceClassification.from_pretrained(ASSETS_DIR, dtype=dtype)
    finally:
        if progress_bar:
            hf_logging.enable_progress_bar()
    model.eval()
    tokenizer = Tokenizer.from_file(str(ASSETS_DIR / "tokenizer.json"))
    return model, tokenizer


def encode(tokenizer: Tokenizer, texts: list[str], max_length: int = 128) -> tuple[Tensor, Tensor]:
    r"""
    Tokenize sentences into a right-padded batch.

    Args:
        tokenizer (tokenizers.Tokenizer): the word-level tokenizer of the model.
        texts (list[str]): the sentences (a single ``str`` is accepted as a batch of one).
        max_length (int, optional): sentences are truncated to this many tokens.
                    Default: ``128``

    Returns:
        *tuple* ``(input_ids, attention_mask)`` of ``LongTensor`` of shape
        ``(len(texts), length)``, ``length`` being the longest (truncated) sentence, at least 1; padding
        positions hold token id ``0`` (``"[PAD]"``) and mask ``0``.
    """
    if isinstance(texts, str):
        texts = [texts]
    if max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")
    ids = [encoding.ids[:max_length] for encoding in tokenizer.encode_batch(list(texts))]
    length = max([1, *(len(row) for row in ids)])
    input_ids = torch.full((len(ids), length), PAD_ID, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), length), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, : len(row)] = 1
    return input_ids, attention_mask


__all__ = [
    "ASSETS_DIR",
    "LABELS",
    "SAMPLE_LABELS",
    "SAMPLE_SENTENCES",
    "encode",
    "load_default_classifier",
]
