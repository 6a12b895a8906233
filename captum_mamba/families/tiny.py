"""Shared pieces of the families' tiny test configurations (``config=``) and of their random drawers (``random_config=``).

A family's ``config(**overrides)`` returns the Hugging Face configuration of a tiny bias-free model
(a vocabulary of 40 unless ``vocab_size`` is given) that runs in float64 on the CPU: attention
through PyTorch's SDPA (``attn_implementation="sdpa"``) and mixtures of experts through the eager
loop (``experts_implementation="eager"``; transformers' default, ``grouped_mm``, takes no
float64). Either can be overridden like any other setting. ``random_config(rng)`` draws overrides
of it for the configuration sweep of the test suite: small sizes, layer patterns, head and group
counts, expert counts.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

#: The tiny configurations' vocabulary size (unless overridden).
VOCAB = 40

#: What float64 on the CPU needs of every tiny configuration with attention.
FLOAT64_ATTENTION: dict[str, Any] = dict(attn_implementation="sdpa")
#: ... and of every one with mixtures of experts.
FLOAT64_EXPERTS: dict[str, Any] = dict(attn_implementation="sdpa", experts_implementation="eager")


def divisor(rng: random.Random, n: int, choices: Sequence[int] = (1, 2, 4)) -> int:
    """One of ``choices`` that divides ``n`` (1 always does)."""
    return rng.choice([c for c in choices if n % c == 0] or [1])


def attention_heads(rng: random.Random, heads: Sequence[int] = (1, 2, 4)) -> dict[str, int]:
    """Query heads and key/value heads (grouped-query: the key/value heads divide the query heads)."""
    count = rng.choice(list(heads))
    return dict(num_attention_heads=count, num_key_value_heads=divisor(rng, count))


def subset(rng: random.Random, n: int) -> list[int]:
    """A random subset of ``range(n)``, in order (possibly empty)."""
    return [index for index in range(n) if rng.random() < 0.5]
