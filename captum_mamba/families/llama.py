"""Hugging Face Llama and Qwen3 (attention-only decoders): AttnLRP / CP-LRP at the attention interface.

They share their layers with the hybrids' attention and MLP blocks: rotary embeddings (a linear
map of ``q`` and ``k`` with constant ``cos``/``sin``), grouped-query heads, RMSNorms (Qwen3 also
on ``q`` and ``k``), SwiGLU MLPs. Only the modules are declared; the models' own forwards run.

Each declares a tiny bias-free test configuration (``config``: 2 layers of width 16, 4 query heads
of 4 dimensions on 2 key/value heads, SDPA attention; see :mod:`captum_mamba.families.tiny`) and
a drawer of random ones (``random_config``).
"""

from __future__ import annotations

import random
from typing import Any

from transformers import LlamaConfig, Qwen3Config
from transformers.activations import SiLUActivation
from transformers.models.llama import modeling_llama
from transformers.models.qwen3 import modeling_qwen3

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.families.tiny import FLOAT64_ATTENTION, VOCAB, attention_heads
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.block import OwnForwardRule
from captum_mamba.rules.mlp import GatedMLPRule
from captum_mamba.rules.norm import RMSNormRule
from captum_mamba.rules.silu import SiLUIdentityRule

#: The sizes of the tiny Llama and Qwen3 test configurations.
TINY_SETTINGS: dict[str, Any] = dict(
    vocab_size=VOCAB,
    hidden_size=16,
    intermediate_size=24,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=4,
    use_cache=False,
    tie_word_embeddings=False,
    **FLOAT64_ATTENTION,
)


def tiny_llama_config(**overrides: Any) -> LlamaConfig:
    """A tiny bias-free Llama configuration for tests (vocabulary of 40, SDPA attention)."""
    return LlamaConfig(**{**TINY_SETTINGS, **overrides})


def tiny_qwen3_config(**overrides: Any) -> Qwen3Config:
    """A tiny bias-free Qwen3 configuration for tests (Llama's sizes; RMSNorms on q and k)."""
    return Qwen3Config(**{**TINY_SETTINGS, **overrides})


def random_config(rng: random.Random) -> dict[str, Any]:
    """Random sizes for the configuration sweep (overrides of the tiny configuration): grouped-query heads, rotary dims."""
    return dict(
        hidden_size=rng.choice([4, 8, 12]),
        intermediate_size=rng.choice([4, 8, 12]),
        num_hidden_layers=rng.randint(1, 3),
        head_dim=rng.choice([2, 4, 6]),  # even: the rotary embedding rotates pairs
        **attention_heads(rng),
    )


LLAMA = ModelFamily(
    name="llama",
    mixers={},
    norms={modeling_llama.LlamaRMSNorm: RMSNormRule},
    containers=(
        modeling_llama.LlamaModel,
        modeling_llama.LlamaForCausalLM,
        modeling_llama.LlamaRotaryEmbedding,  # positions -> cos, sin: no relevance path
    ),
    rules={
        modeling_llama.LlamaDecoderLayer: OwnForwardRule(),
        modeling_llama.LlamaAttention: AttentionRule(),
        modeling_llama.LlamaMLP: GatedMLPRule(),
        SiLUActivation: SiLUIdentityRule,
    },
    causal_lm=modeling_llama.LlamaForCausalLM,
    config=tiny_llama_config,
    random_config=random_config,
    canonizable=False,
)

QWEN3 = ModelFamily(
    name="qwen3",
    mixers={},
    norms={modeling_qwen3.Qwen3RMSNorm: RMSNormRule},
    containers=(modeling_qwen3.Qwen3Model, modeling_qwen3.Qwen3ForCausalLM, modeling_qwen3.Qwen3RotaryEmbedding),
    rules={
        modeling_qwen3.Qwen3DecoderLayer: OwnForwardRule(),
        modeling_qwen3.Qwen3Attention: AttentionRule(),
        modeling_qwen3.Qwen3MLP: GatedMLPRule(),
        SiLUActivation: SiLUIdentityRule,
    },
    causal_lm=modeling_qwen3.Qwen3ForCausalLM,
    config=tiny_qwen3_config,
    random_config=random_config,
    canonizable=False,
)
