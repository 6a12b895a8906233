"""Relevance that a rule assigns to its input beyond Gradient x Input (the z^B rule's bound terms).

Most rules are Gradient x Input through a rewritten forward. The bounded-input rule (z^B) also
gives relevance to pixels in proportion to the bounds, ``-l_j w⁺ - h_j w⁻``, which no gradient
times ``x_j`` can express (it is not zero where ``x_j`` is). Such a rule records that part for its
input tensor here during the backward pass; the attribution classes add it to ``x * gradient``
of the tensor they attribute, and refuse to answer when it was recorded for a tensor they do not
attribute (the model transformed the attributed input before the rule's layer).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

from torch import Tensor


class InputRelevance:
    """Relevance recorded per input tensor (by identity) during one explanation's backward pass."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[Tensor, Tensor]] = {}

    def add(self, tensor: Tensor, relevance: Tensor) -> None:
        """Record ``relevance`` (shaped like ``tensor``) for ``tensor``."""
        key = id(tensor)
        if key in self._entries:
            held, total = self._entries[key]
            self._entries[key] = (held, total + relevance)
        else:
            self._entries[key] = (tensor, relevance)  # the tensor is held: its id stays unique

    def completed(self, leaves: Sequence[Tensor], attributions: Sequence[Tensor], what: str) -> tuple[Tensor, ...]:
        r"""
        ``attributions`` (Gradient x Input of ``leaves``) plus the relevance recorded for each leaf.

        Raises:
            ValueError: if relevance was recorded for a tensor that is not one of ``leaves``.
        """
        keys = {id(leaf) for leaf in leaves}
        stray = [tensor for key, (tensor, _) in self._entries.items() if key not in keys]
        if stray:
            raise ValueError(
                f"a bounded-input rule (z^B) was applied to a tensor derived from the {what} (shape "
                f"{tuple(stray[0].shape)}), so its relevance cannot be returned for the {what}: pass the tensor "
                "that reaches the layer unchanged (e.g. normalise the images before calling attribute), or use "
                "SignedGammaRule there"
            )
        return tuple(
            attribution + self._entries[id(leaf)][1].to(attribution.dtype) if id(leaf) in self._entries else attribution
            for leaf, attribution in zip(leaves, attributions)
        )


_COLLECTOR: ContextVar[InputRelevance | None] = ContextVar("captum_mamba_input_relevance", default=None)


def current_input_relevance() -> InputRelevance | None:
    """The collector of the explanation running now (``None`` outside one)."""
    return _COLLECTOR.get()


@contextmanager
def collecting_input_relevance() -> Iterator[InputRelevance]:
    """Collect input relevance for the duration of a ``with`` block."""
    collector = InputRelevance()
    token = _COLLECTOR.set(collector)
    try:
        yield collector
    finally:
        _COLLECTOR.reset(token)
