"""Hugging Face Bamba (IBM; Mamba-2 mixers, a few attention layers, SwiGLU MLPs in every layer).

Its tiny test configuration (``config``) has Mamba-2 layers around one attention layer (partial
rotary embeddings) and SDPA attention; ``random_config`` draws the sizes, the attention layers'
positions and the head and group counts (see :mod:`captum_mamba.families.tiny`).
"""

from __future__ import annotations

import random
from typing import Any

from transformers import BambaConfig
from transformers.models.bamba import modeling_bamba

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.families.tiny import FLOAT64_ATTENTION, VOCAB, attention_heads, divisor, subset
from captum_mamba.heads import BambaForSequenceClassification
from captum_mamba.mixers.layouts import Mamba2Layout
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.block import OwnForwardRule
from captum_mamba.rules.mlp import GatedMLPRule
from captum_mamba.rules.norm import GatedRMSNormRule, RMSNormRule


def tiny_config(**overrides: Any) -> BambaConfig:
    """A tiny bias-free Bamba configuration for tests: Mamba-2, attention, Mamba-2 (vocabulary of 40)."""
    settings: dict[str, Any] = dict(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=3,
        attn_layer_indices=[1],
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=4,
        mamba_n_heads=4,
        mamba_d_head=8,
        mamba_n_groups=1,
        mamba_d_state=8,
        mamba_d_conv=4,
        mamba_expand=2,
        mamba_chunk_size=16,
        mamba_conv_bias=False,
        mamba_proj_bias=False,
        use_cache=False,
        tie_word_embeddings=False,
        **FLOAT64_ATTENTION,
    )
    return BambaConfig(**{**settings, **overrides})


def random_config(rng: random.Random) -> dict[str, Any]:
    """Random sizes for the configuration sweep: ``mamba_n_heads * mamba_d_head = mamba_expand * hidden``."""
    hidden, expand = rng.choice([4, 8, 12]), rng.choice([1, 2])
    heads = divisor(rng, hidden * expand)
    layers = rng.randint(1, 3)
    return dict(
        hidden_size=hidden,
        intermediate_size=rng.choice([4, 8, 12]),
        num_hidden_layers=layers,
        attn_layer_indices=subset(rng, layers),
        head_dim=rng.choice([4, 8]),  # half of it rotary, in pairs
        **attention_heads(rng),
        mamba_expand=expand,
        mamba_n_heads=heads,
        mamba_d_head=hidden * expand // heads,
        mamba_n_groups=divisor(rng, heads),
        mamba_d_state=rng.randint(1, 6),
        mamba_d_conv=rng.randint(1, 4),
        mamba_chunk_size=rng.randint(1, 8),
    )


BAMBA = ModelFamily(
    name="bamba",
    mixers={modeling_bamba.BambaMixer: Mamba2Layout()},
    norms={modeling_bamba.BambaRMSNorm: RMSNormRule, modeling_bamba.BambaRMSNormGated: GatedRMSNormRule},
    containers=(
        modeling_bamba.BambaModel,
        modeling_bamba.BambaForCausalLM,
        modeling_bamba.BambaRotaryEmbedding,
        BambaForSequenceClassification,
    ),
    rules={
        modeling_bamba.BambaDecoderLayer: OwnForwardRule(),
        modeling_bamba.BambaAttention: AttentionRule(),
        modeling_bamba.BambaMLP: GatedMLPRule(),
    },
    causal_lm=modeling_bamba.BambaForCausalLM,
    classifier=BambaForSequenceClassification,
    config=tiny_config,
    random_config=random_config,
    canonizable=False,
)
