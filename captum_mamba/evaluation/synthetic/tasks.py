"""Synthetic long-range tasks with a known answer, generated on the fly (seeded)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

READOUT_ID = 0
"""The last token of every sequence; the classifier reads its state (last-token pooling)."""
NEEDLE_ID = 1
"""The token whose presence the needle model detects."""
FILLER_IDS = range(2, 16)
VOCAB_SIZE = 16


@dataclass
class NeedleBatch:
    r"""
    Needle-detection examples.

    Args:
        input_ids (Tensor): ``(batch, length)``, filler tokens, the needle at ``needle_position``
                    when ``label`` is 1, and the read-out token last.
        labels (Tensor): ``(batch,)``, 1 if the needle is present.
        needle_position (Tensor): ``(batch,)`` position of the needle, -1 when absent.
    """

    input_ids: Tensor
    labels: Tensor
    needle_position: Tensor


def needle_batch(
    batch: int,
    length: int,
    generator: torch.Generator,
    depth: float | None = None,
    present: bool | None = None,
) -> NeedleBatch:
    r"""
    Needle detection ("does the needle token appear?"): vocabulary 16, read-out token last.

    Args:
        batch (int): number of sequences.
        length (int): tokens per sequence, read-out included (at least 2).
        generator (torch.Generator): the seed source.
        depth (float, optional): where the needle sits, as a fraction of the positions before
                    the read-out (0: first token, 1: just before the read-out); random if None.
        present (bool, optional): force the needle in (True) or out (False); half-half if None.

    Returns:
        *NeedleBatch*.
    """
    if length < 2:
        raise ValueError(f"length must be at least 2 (a token and the read-out), got {length}")
    if depth is not None and not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must lie in [0, 1], got {depth}")
    ids = torch.randint(FILLER_IDS.start, FILLER_IDS.stop, (batch, length), generator=generator)
    ids[:, -1] = READOUT_ID
    if present is None:
        labels = torch.randint(0, 2, (batch,), generator=generator)
    else:
        labels = torch.full((batch,), int(present))
    if depth is None:
        positions = torch.randint(0, length - 1, (batch,), generator=generator)
    else:
        positions = torch.full((batch,), round(depth * (length - 2)))
    rows = labels.nonzero()[:, 0]
    ids[rows, positions[rows]] = NEEDLE_ID
    positions = torch.where(labels == 1, positions, torch.full_like(positions, -1))
    return NeedleBatch(ids, labels, positions)
