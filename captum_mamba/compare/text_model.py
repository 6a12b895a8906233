"""A text classifier as the comparison view sees it: tokenizer, model and class names."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


class ComparisonInputError(ValueError):
    """Input the comparison view cannot explain (unknown method, empty, too long or malformed text)."""


@dataclass
class TextModel:
    r"""
    What the comparison view needs to explain one text.

    Args:
        model (nn.Module): a Hugging Face-style classifier or causal LM taking
                    ``inputs_embeds`` / ``attention_mask`` with ``get_input_embeddings()``.
        tokenize (Callable): ``tokenize(text) -> (token_ids, token_strings)``.
        class_name (Callable): ``class_name(index) -> str`` of an output index.
        max_tokens (int): the longest input accepted; longer texts are refused with a message.
        name (str): shown in the page header.
        known_source (Callable, optional): ``known_source(token_ids) -> position``: the input
                    position the explained output is known to rely on (e.g. the token a copying
                    model copies), marked on the page with whether each method ranks it first;
                    ``None``: no known truth. Default: None
        hold_last (bool, optional): the model is a causal LM explained at its last position: the
                    page marks that position, top-1 leaves it out and token flipping holds it (as
                    ``captum-mamba evaluate copying`` does). Default: False
        input_hint (str, optional): what to type, after "type" in the page's text box and
                    "enter" in the message on an empty text. Default: "a text to explain, e.g. a
                    gorgeous , witty film ."
        about (str, optional): a paragraph on the model and its inputs, shown under the page
                    header. Default: ""
    """

    model: nn.Module
    tokenize: Callable[[str], tuple[list[int], list[str]]]
    class_name: Callable[[int], str]
    max_tokens: int = 2048
    name: str = "model"
    known_source: Callable[[list[int]], int | None] | None = None
    hold_last: bool = False
    input_hint: str = "a text to explain, e.g. a gorgeous , witty film ."
    about: str = ""

    def encode(self, text: str) -> tuple[Tensor, list[str]]:
        r"""
        Token ids ``(1, length)`` and token strings of ``text``, validated.

        Raises:
            ComparisonInputError: empty text, no tokens, more than ``max_tokens`` tokens, or text
                that ``tokenize`` refuses.
        """
        if not isinstance(text, str) or not text.strip():
            raise ComparisonInputError(f"the text is empty: enter {self.input_hint}")
        ids, tokens = self.tokenize(text)
        if not ids:
            raise ComparisonInputError("the text has no tokens the model knows")
        if len(ids) > self.max_tokens:
            raise ComparisonInputError(
                f"the text has {len(ids)} tokens, more than this model's limit of {self.max_tokens} tokens"
            )
        return torch.tensor([ids], dtype=torch.long), list(tokens)

    @classmethod
    def default(cls, max_tokens: int = 2048, variant: str = "default") -> TextModel:
        r"""
        An embedded sentiment classifier (:mod:`captum_mamba.default`), offline.

        Args:
            max_tokens (int, optional): the longest text accepted, in tokens. Default: 2048
            variant (str, optional): ``"default"`` (the Mamba model) or ``"hybrid"`` (the Bamba
                        model: Mamba-2 layers and an attention layer). Default: "default"

        Returns:
            *TextModel*.

        Raises:
            ValueError: for an unknown variant.
        """
        from captum_mamba.default import LABELS, VARIANT_NAMES, load_default_classifier

        model, tokenizer = load_default_classifier(variant=variant)

        def tokenize(text: str) -> tuple[list[int], list[str]]:
            encoding = tokenizer.encode(text.strip().lower())
            return list(encoding.ids), list(encoding.tokens)

        name = "default sentiment model (Rotten Tomatoes)" if variant == "default" else VARIANT_NAMES[variant]
        return cls(model, tokenize, lambda index: LABELS[index], max_tokens, name)

    @classmethod
    def from_hf(
        cls, model: nn.Module, tokenizer: Any, class_names: Sequence[str] | None = None, max_tokens: int = 2048
    ) -> TextModel:
        r"""
        A ``transformers`` model with its tokenizer, e.g. ``MambaForCausalLM.from_pretrained(...)``.

        Args:
            model (nn.Module): the model (a classifier or a causal LM).
            tokenizer: a ``transformers`` tokenizer.
            class_names (Sequence[str], optional): names of the output indices; default: the
                        model's ``config.id2label`` for classifiers, decoded tokens for LMs.
            max_tokens (int, optional): the longest text accepted, in tokens. Default: 2048

        Returns:
            *TextModel*.
        """

        def tokenize(text: str) -> tuple[list[int], list[str]]:
            ids = list(tokenizer(text)["input_ids"])
            return ids, list(tokenizer.convert_ids_to_tokens(ids))

        def class_name(index: int) -> str:
            if class_names is not None:
                return class_names[index]
            id2label = getattr(getattr(model, "config", None), "id2label", None)
            vocab = getattr(getattr(model, "config", None), "vocab_size", None)
            if id2label and len(id2label) != vocab:
                return str(id2label[index])
            return tokenizer.decode([index])

        return cls(model, tokenize, class_name, max_tokens, type(model).__name__)
