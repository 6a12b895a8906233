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


#: The kinds of layers of the linear-attention hybrids' patterns (``layer_types``).
LINEAR_ATTENTION, FULL_ATTENTION = "linear_attention", "full_attention"


def layer_pattern(rng: random.Random, layers: int, kinds: Sequence[str], every_kind: bool = False) -> list[str]:
    """``layers`` kinds drawn from ``kinds``; with ``every_kind`` drawn again until each kind occurs (``layers >= len(kinds)``)."""
    while True:
        pattern = [rng.choice(list(kinds)) for _ in range(layers)]
        if not every_kind or set(pattern) == set(kinds):
            return pattern


def gated_delta_settings() -> dict[str, Any]:
    r"""
    The tiny layers the Gated DeltaNet hybrids' test configurations share (Qwen3-Next, Qwen3.5,
    Qwen3.5-MoE, OLMo hybrid; each family adds its own): three layers (Gated DeltaNet, attention,
    Gated DeltaNet) with SwiGLU MLPs of 24; Gated DeltaNets with 2 key heads of 4 serving 4 value
    heads of 6 and a convolution of 4 taps; attention with 4 query heads of 8 over 2 key/value
    heads (SDPA); bias-free, untied, no cache.

    Returns:
        *dict*: a fresh settings dictionary (its lists are not shared).
    """
    return dict(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=3,
        layer_types=[LINEAR_ATTENTION, FULL_ATTENTION, LINEAR_ATTENTION],
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        linear_conv_kernel_dim=4,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        linear_key_head_dim=4,
        linear_value_head_dim=6,
        attention_bias=False,
        tie_word_embeddings=False,
        use_cache=False,
        **FLOAT64_ATTENTION,
    )


def random_gated_delta_layers(rng: random.Random, every_kind: bool = False) -> dict[str, Any]:
    r"""
    Random overrides of :func:`gated_delta_settings` for the configuration sweep: sizes, the layer
    pattern (Gated DeltaNet or attention per layer; ``every_kind``: both at least once), the
    attention's query and key/value heads (grouped-query), the Gated DeltaNets' key heads, value
    heads (a multiple of the key heads: grouped), key and value head sizes, convolution taps.

    Args:
        rng (random.Random): the sweep's generator.
        every_kind (bool, optional): at least one layer of each kind (OLMo hybrid requires it).
                    Default: False

    Returns:
        *dict*: the overrides.
    """
    layers = rng.randint(2 if every_kind else 1, 3)
    key_heads = rng.choice([1, 2])
    return dict(
        hidden_size=rng.choice([8, 12, 16]),
        intermediate_size=rng.choice([4, 8, 12]),
        num_hidden_layers=layers,
        layer_types=layer_pattern(rng, layers, (LINEAR_ATTENTION, FULL_ATTENTION), every_kind),
        head_dim=rng.choice([8, 16]),  # a quarter of it rotary (Qwen), in pairs
        **attention_heads(rng),
        linear_conv_kernel_dim=rng.randint(1, 4),
        linear_num_key_heads=key_heads,
        linear_num_value_heads=key_heads * rng.choice([1, 2, 3]),
        linear_key_head_dim=rng.choice([2, 4]),
        linear_value_head_dim=rng.choice([2, 3, 6]),
    )
