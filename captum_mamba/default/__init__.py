"""The embedded default models: small sentiment classifiers, shipped with the package.

The default model is a 2-layer Mamba (hidden size 64) with mean pooling and a linear head,
trained on the Rotten Tomatoes sentence-polarity data (Pang & Lee, 2005) with a word-level
tokenizer; it loads offline and runs on CPU in milliseconds, so examples, tests and tutorials
can explain a real trained model. ``assets/MODEL_CARD.md`` documents the data, split,
hyper-parameters and held-out accuracy; ``captum-mamba train default`` rebuilds it.

The hybrid variant (``load_default_classifier(variant="hybrid")``, folder ``hybrid/``) is a
3-layer Bamba (Mamba-2, attention, Mamba-2, each with a gated MLP; bias-free) trained the same
way on the same data with the same tokenizer; ``captum-mamba train default --architecture bamba``
rebuilds it.

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
from transformers import PreTrainedModel
from transformers.utils import logging as hf_logging

from captum_mamba.heads import BambaForSequenceClassification, MambaForSequenceClassification

ASSETS_DIR: Path = Path(__file__).resolve().parent / "assets"
"""Folder of the shipped model: ``config.json``, ``model.safetensors``, ``tokenizer.json``, ``MODEL_CARD.md``, ``metrics.json``."""

HYBRID_DIR: Path = Path(__file__).resolve().parent / "hybrid"
"""Folder of the shipped hybrid (Bamba) model, with the same files as :data:`ASSETS_DIR`."""

VARIANTS: dict[str, tuple[Path, type[MambaForSequenceClassification | BambaForSequenceClassification]]] = {
    "default": (ASSETS_DIR, MambaForSequenceClassification),
    "hybrid": (HYBRID_DIR, BambaForSequenceClassification),
}
"""The shipped classifiers by variant name: their folder and class."""

VARIANT_NAMES: dict[str, str] = {
    "default": "default sentiment model (Mamba, Rotten Tomatoes)",
    "hybrid": "hybrid sentiment model (Bamba: Mamba-2 + attention, Rotten Tomatoes)",
}
"""A readable name of each variant, for reports and the comparison view."""

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


def load_quietly(model_class: type[PreTrainedModel], folder: Path, dtype: torch.dtype) -> PreTrainedModel:
    r"""
    ``model_class.from_pretrained(folder)`` in eval mode, without Hugging Face's progress bar
    (the shipped models and local checkpoints load from disk in a moment).

    Args:
        model_class (type): a Hugging Face model class (or an ``Auto*`` class).
        folder (Path): what ``save_pretrained`` wrote.
        dtype (torch.dtype): the parameters' dtype.

    Returns:
        *PreTrainedModel* in eval mode.
    """
    progress_bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return model_class.from_pretrained(folder, dtype=dtype).eval()
    finally:
        if progress_bar:
            hf_logging.enable_progress_bar()


def load_default_classifier(
    dtype: torch.dtype = torch.float32,
    variant: str = "default",
) -> tuple[MambaForSequenceClassification | BambaForSequenceClassification, Tokenizer]:
    r"""
    Load a shipped sentiment classifier and its tokenizer, offline.

    Args:
        dtype (torch.dtype, optional): floating-point type of the model's parameters.
                    Default: ``torch.float32``
        variant (str, optional): ``"default"`` (the Mamba model) or ``"hybrid"`` (the Bamba
                    model: Mamba-2 layers and an attention layer). Default: ``"default"``

    Returns:
        *tuple* ``(model, tokenizer)``: the classifier in eval mode, on CPU, with
        ``model.config.id2label == {0: "negative", 1: "positive"}`` (a
        :class:`~captum_mamba.heads.MambaForSequenceClassification` or, for ``"hybrid"``, a
        :class:`~captum_mamba.heads.BambaForSequenceClassification`), and its
        ``tokenizers.Tokenizer`` (use :func:`encode` to make model inputs; both variants share it).

    Raises:
        ValueError: for an unknown variant (the message lists the known ones).

    Example::

        >>> model, tokenizer = load_default_classifier(variant="hybrid")
        >>> input_ids, attention_mask = encode(tokenizer, SAMPLE_SENTENCES)
        >>> model(input_ids=input_ids, attention_mask=attention_mask).logits.argmax(-1)
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    folder, model_class = VARIANTS[variant]
    model = load_quietly(model_class, folder, dtype)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
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
    "HYBRID_DIR",
    "LABELS",
    "SAMPLE_LABELS",
    "SAMPLE_SENTENCES",
    "VARIANTS",
    "VARIANT_NAMES",
    "encode",
    "load_default_classifier",
]
