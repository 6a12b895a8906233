"""Targets beyond Captum's one-index-per-example: sums of several token logits."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

TokenSpec = tuple[int, int]


class TokenTargets:
    r"""
    Explain the *sum* of several ``(position, token)`` logits per example in one backward pass,
    e.g. a generated span. Relevance is additive: the explanation of the sum equals the sum of
    the single-token explanations, and it conserves the summed logits.

    Args:
        specs (Sequence): either one list of ``(position, token_id)`` pairs used for every
                    example, or one such list per example (``per_example=True``).
        per_example (bool, optional): whether ``specs`` holds one list per example. Default: False

    Examples::

        >>> span = TokenTargets([(5, 318), (6, 257), (7, 1332)])      # same span for all rows
        >>> relevance = MambaLRP(model).attribute(embeds, target=span)
    """

    def __init__(self, specs: Sequence[Sequence[TokenSpec]] | Sequence[TokenSpec], per_example: bool = False) -> None:
        rows = [list(map(tuple, row)) for row in specs] if per_example else [list(map(tuple, specs))]
        for row in rows:
            if not row or any(len(spec) != 2 for spec in row):
                raise ValueError("each example needs at least one (position, token_id) pair")
        self.rows: list[list[TokenSpec]] = rows  # type: ignore[assignment]
        self.per_example = per_example

    def select(self, logits: Tensor) -> Tensor:
        r"""
        Args:
            logits (Tensor): sequence logits ``(batch, length, vocab)``.

        Returns:
            *Tensor* ``(batch,)``: the summed logits of each example's pairs.
        """
        if logits.dim() != 3:
            raise ValueError(f"TokenTargets need sequence logits (batch, length, vocab), got {tuple(logits.shape)}")
        batch, length, vocab = logits.shape
        rows = self.rows * batch if not self.per_example else self.rows
        if len(rows) != batch:
            raise ValueError(f"got token targets for {len(rows)} examples and a batch of {batch}")
        totals = []
        for example, row in enumerate(rows):
            for position, token in row:
                if not -length <= position < length or not 0 <= token < vocab:
                    raise IndexError(
                        f"token target {(position, token)} is out of range for logits of shape {(length, vocab)}"
                    )
            positions = torch.tensor([p % length for p, _ in row], device=logits.device)
            tokens = torch.tensor([t for _, t in row], device=logits.device)
            totals.append(logits[example, positions, tokens].sum())
        return torch.stack(totals)

    def __repr__(self) -> str:
        return f"TokenTargets({self.rows!r}, per_example={self.per_example})"


def last_token_positions(attention_mask: Tensor) -> Tensor:
    r"""
    The index of each row's last real token (right or left padding).

    Args:
        attention_mask (Tensor): ``(batch, length)``, 1 for real tokens.

    Returns:
        *LongTensor* ``(batch,)``, usable as ``explained_position``.
    """
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be (batch, length), got {tuple(attention_mask.shape)}")
    if (attention_mask.sum(-1) == 0).any():
        raise ValueError("a row of the attention mask has no real token")
    length = attention_mask.shape[1]
    reversed_first = attention_mask.flip(-1).long().argmax(-1)
    return length - 1 - reversed_first
