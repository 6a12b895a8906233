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


QUERY_ID = 0
"""Passkey retrieval: the last token, at which the model must output the value."""
KEY_ID = 1
"""Passkey retrieval: the marker followed by the value."""
SYMBOL_IDS = range(2, 16)
"""Passkey retrieval and copying: filler, values and data share these tokens."""
DELIMITER_ID = 0
"""Copying: the token after which the data must be reproduced."""
BLANK_ID = 1
"""Copying: the blank between the data and the delimiter, and after the delimiter."""
IGNORE_INDEX = -100
"""Label of positions without a target (PyTorch's cross-entropy default)."""


@dataclass
class PasskeyBatch:
    r"""
    Passkey-retrieval examples ``[filler..., KEY, v, filler..., QUERY]``, answer ``v``.

    Args:
        input_ids (Tensor): ``(batch, length)``; filler and values share :data:`SYMBOL_IDS`, so
                    only the marker :data:`KEY_ID` tells which token is the value.
        values (Tensor): ``(batch,)`` the token to output at the last position.
        value_position (Tensor): ``(batch,)`` where the value sits (the relevant position).
    """

    input_ids: Tensor
    values: Tensor
    value_position: Tensor


@dataclass
class CopyingBatch:
    r"""
    Copying-task examples ``[x_1..x_m, BLANK..., DELIMITER, BLANK * (m - 1)]``.

    Args:
        input_ids (Tensor): ``(batch, length)``.
        labels (Tensor): ``(batch, length)``: ``x_k`` at the ``k``-th position from the
                    delimiter on, :data:`IGNORE_INDEX` elsewhere (a causal LM's targets, unshifted).
        source_position (Tensor): ``(batch, length)``: the position of the token each output
                    copies (``k - 1`` for ``x_k``), -1 where no output is due.
    """

    input_ids: Tensor
    labels: Tensor
    source_position: Tensor


def _position_at_depth(batch: int, last: int, generator: torch.Generator, depth: float | None) -> Tensor:
    if depth is None:
        return torch.randint(0, last + 1, (batch,), generator=generator)
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must lie in [0, 1], got {depth}")
    return torch.full((batch,), round(depth * last))


def passkey_batch(batch: int, length: int, generator: torch.Generator, depth: float | None = None) -> PasskeyBatch:
    r"""
    Passkey / needle retrieval: a causal LM must output, at the final :data:`QUERY_ID`, the token
    that follows the :data:`KEY_ID` marker.

    Args:
        batch (int): number of sequences.
        length (int): tokens per sequence, query included (at least 3).
        generator (torch.Generator): the seed source.
        depth (float, optional): where the marker sits, as a fraction of its possible positions
                    (0: first token; 1: marker and value just before the query); random if None.

    Returns:
        *PasskeyBatch*.
    """
    if length < 3:
        raise ValueError(f"length must be at least 3 (marker, value and query), got {length}")
    ids = torch.randint(SYMBOL_IDS.start, SYMBOL_IDS.stop, (batch, length), generator=generator)
    ids[:, -1] = QUERY_ID
    marker = _position_at_depth(batch, length - 3, generator, depth)
    rows = torch.arange(batch)
    ids[rows, marker] = KEY_ID
    return PasskeyBatch(ids, ids[rows, marker + 1].clone(), marker + 1)


def copying_batch(batch: int, length: int, generator: torch.Generator, copy_length: int = 4) -> CopyingBatch:
    r"""
    The copying task: ``copy_length`` data tokens, blanks, the delimiter, then the model must
    output the data, one token per position from the delimiter on.

    Args:
        batch (int): number of sequences.
        length (int): tokens per sequence (at least ``2 * copy_length + 1``).
        generator (torch.Generator): the seed source.
        copy_length (int, optional): number of data tokens. Default: ``4``

    Returns:
        *CopyingBatch*.
    """
    if copy_length < 1:
        raise ValueError(f"copy_length must be positive, got {copy_length}")
    if length < 2 * copy_length + 1:
        raise ValueError(f"length must be at least 2 * copy_length + 1 = {2 * copy_length + 1}, got {length}")
    data = torch.randint(SYMBOL_IDS.start, SYMBOL_IDS.stop, (batch, copy_length), generator=generator)
    ids = torch.full((batch, length), BLANK_ID)
    ids[:, :copy_length] = data
    start = length - copy_length
    ids[:, start] = DELIMITER_ID
    labels = torch.full((batch, length), IGNORE_INDEX)
    labels[:, start:] = data
    source = torch.full((batch, length), -1)
    source[:, start:] = torch.arange(copy_length)
    return CopyingBatch(ids, labels, source)
