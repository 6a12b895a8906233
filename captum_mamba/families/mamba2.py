"""Hugging Face ``transformers`` Mamba2 (SSD, gated group norm).

Its tiny test configuration (``config``: :func:`tiny_config`, two bias-free layers of width 16,
4 heads of 8) and ``random_config`` (sizes, heads, groups, chunk size) build the shared suite's models.
"""

from __future__ import annotations

import random
from typing import Any

from transformers import Mamba2Config
from transformers.models.mamba2 import modeling_mamba2

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.families.tiny import VOCAB
from captum_mamba.heads import Mamba2ForSequenceClassification
from captum_mamba.mixers.layouts import Mamba2Layout
from captum_mamba.rules.block import BlockRule
from captum_mamba.rules.norm import GatedRMSNormRule, RMSNormRule


def tiny_config(**overrides: Any) -> Mamba2Config:
    """A tiny bias-free Mamba2 configuration for tests (vocabulary of 40, 4 heads of 8)."""
    settings: dict[str, Any] = dict(
        vocab_size=VOCAB,
        hidden_size=16,
        state_size=8,
        num_hidden_layers=2,
        expand=2,
        conv_kernel=4,
        num_heads=4,
        head_dim=8,
        n_groups=1,
        chunk_size=8,
        use_conv_bias=False,
        use_bias=False,
        residual_in_fp32=False,
        use_cache=False,
    )
    settings.update(overrides)
    return Mamba2Config(**settings)


def random_config(rng: random.Random) -> dict[str, Any]:
    """Random sizes for the configuration sweep: ``heads * head_dim = expand * hidden``, heads split over groups."""
    hidden = rng.choice([4, 8, 12])
    expand = rng.choice([1, 2])
    inner = hidden * expand
    heads = rng.choice([h for h in (1, 2, 4) if inner % h == 0])
    return dict(
        hidden_size=hidden,
        expand=expand,
        num_heads=heads,
        head_dim=inner // heads,
        n_groups=rng.choice([g for g in (1, 2, 4) if heads % g == 0]),
        state_size=rng.randint(1, 6),
        num_hidden_layers=rng.randint(1, 3),
        conv_kernel=rng.randint(1, 5),
        chunk_size=rng.randint(1, 8),
        residual_in_fp32=rng.random() < 0.5,
    )


MAMBA2 = ModelFamily(
    name="mamba2",
    mixers={modeling_mamba2.Mamba2Mixer: Mamba2Layout()},
    norms={modeling_mamba2.Mamba2RMSNorm: RMSNormRule, modeling_mamba2.MambaRMSNormGated: GatedRMSNormRule},
    blocks={modeling_mamba2.Mamba2Block: BlockRule()},
    containers=(modeling_mamba2.Mamba2Model, modeling_mamba2.Mamba2ForCausalLM, Mamba2ForSequenceClassification),
    causal_lm=modeling_mamba2.Mamba2ForCausalLM,
    classifier=Mamba2ForSequenceClassification,
    config=tiny_config,
    random_config=random_config,
)
