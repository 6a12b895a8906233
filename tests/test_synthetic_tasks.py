"""Synthetic task generators: labels, positions at the stated depth, seeded reproducibility, errors."""

from __future__ import annotations

import pytest
import torch

from captum_mamba.evaluation.synthetic.tasks import (
    BLANK_ID,
    DELIMITER_ID,
    IGNORE_INDEX,
    KEY_ID,
    NEEDLE_ID,
    QUERY_ID,
    READOUT_ID,
    VOCAB_SIZE,
    copying_batch,
    needle_batch,
    passkey_batch,
)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("length", [2, 9, 64])
@pytest.mark.parametrize("depth", [0.0, 0.3, 1.0])
def test_needle_sits_at_the_stated_depth(length, depth):
    batch = needle_batch(5, length, seeded(3), depth=depth, present=True)
    expected = round(depth * (length - 2))
    assert (batch.needle_position == expected).all()
    assert (batch.input_ids[:, expected] == NEEDLE_ID).all()
    assert ((batch.input_ids == NEEDLE_ID).sum(1) == 1).all() and (batch.input_ids[:, -1] == READOUT_ID).all()
    assert (batch.labels == 1).all()


def test_needle_absent_means_no_needle_anywhere():
    batch = needle_batch(32, 40, seeded(0), present=False)
    assert (batch.labels == 0).all() and not (batch.input_ids == NEEDLE_ID).any()
    assert (batch.needle_position == -1).all()
    assert int(batch.input_ids.max()) < VOCAB_SIZE


@pytest.mark.parametrize("length", [3, 10, 100])
@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_passkey_value_follows_the_key_at_the_stated_depth(length, depth):
    batch = passkey_batch(16, length, seeded(1), depth=depth)
    marker = round(depth * (length - 3))
    rows = torch.arange(16)
    assert (batch.input_ids[:, marker] == KEY_ID).all()
    assert (batch.value_position == marker + 1).all()
    assert torch.equal(batch.values, batch.input_ids[rows, marker + 1])
    assert (batch.input_ids[:, -1] == QUERY_ID).all()
    assert ((batch.input_ids == KEY_ID).sum(1) == 1).all()  # the marker is unique
    assert ((batch.values >= 2) & (batch.values < VOCAB_SIZE)).all()


def test_passkey_values_also_occur_as_filler():
    batch = passkey_batch(64, 64, seeded(2))
    rows = torch.arange(64)
    repeats = (batch.input_ids == batch.values[:, None]).sum(1)
    assert (repeats[rows] >= 1).all() and (repeats > 1).float().mean() > 0.5  # only the marker identifies v
    positions = batch.value_position - 1
    assert len(set(positions.tolist())) > 10  # random depths when depth is None


def test_copying_labels_and_sources():
    batch = copying_batch(8, 15, seeded(4), copy_length=3)
    assert torch.equal(batch.labels[:, -3:], batch.input_ids[:, :3])
    assert (batch.labels[:, :-3] == IGNORE_INDEX).all()
    assert (batch.input_ids[:, 12] == DELIMITER_ID).all()
    assert (batch.input_ids[:, 3:12] == BLANK_ID).all() and (batch.input_ids[:, 13:] == BLANK_ID).all()
    assert batch.source_position[0, -3:].tolist() == [0, 1, 2] and (batch.source_position[:, :-3] == -1).all()
    rows = torch.arange(8)[:, None]
    assert torch.equal(batch.input_ids[rows, batch.source_position[:, -3:]], batch.labels[:, -3:])


@pytest.mark.parametrize(
    "make",
    [
        lambda g: needle_batch(16, 32, g),
        lambda g: passkey_batch(16, 32, g),
        lambda g: copying_batch(16, 32, g),
    ],
)
def test_seeded_reproducibility(make):
    first, again, other = make(seeded(7)), make(seeded(7)), make(seeded(8))
    assert torch.equal(first.input_ids, again.input_ids)
    assert not torch.equal(first.input_ids, other.input_ids)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="length"):
        needle_batch(1, 1, seeded(0))
    with pytest.raises(ValueError, match="length"):
        passkey_batch(1, 2, seeded(0))
    with pytest.raises(ValueError, match="depth"):
        passkey_batch(1, 10, seeded(0), depth=-0.1)
    with pytest.raises(ValueError, match="copy_length"):
        copying_batch(1, 10, seeded(0), copy_length=0)
    with pytest.raises(ValueError, match="length"):
        copying_batch(1, 8, seeded(0), copy_length=4)
