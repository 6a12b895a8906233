"""Hugging Face Qwen3-MoE: Qwen3's attention with sparse mixtures of SwiGLU experts as feed-forwards.

Its tiny test configuration (``config``) has experts (top 2 of 4, renormalised) in both layers,
SDPA attention and eager experts; ``random_config`` draws the sizes, the heads, the expert counts
and which layers have experts (see :mod:`captum_mamba.families.tiny`).
"""

from __future__ import annotations

import random
from typing import Any

from transformers import Qwen3MoeConfig
from transformers.activations import SiLUActivation
from transformers.models.qwen3_moe import modeling_qwen3_moe

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.families.tiny import FLOAT64_EXPERTS, VOCAB, attention_heads, subset
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.block import OwnForwardRule
from captum_mamba.rules.mlp import GatedMLPRule
from captum_mamba.rules.moe import ExpertsRule
from captum_mamba.rules.norm import RMSNormRule
from captum_mamba.rules.silu import SiLUIdentityRule


def tiny_config(**overrides: Any) -> Qwen3MoeConfig:
    """A tiny bias-free Qwen3-MoE configuration for tests: experts in every layer, the top-2 weights renormalised."""
    settings: dict[str, Any] = dict(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=4,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=12,
        decoder_sparse_step=1,
        norm_topk_prob=True,
        use_cache=False,
        tie_word_embeddings=False,
        **FLOAT64_EXPERTS,
    )
    return Qwen3MoeConfig(**{**settings, **overrides})


def random_config(rng: random.Random) -> dict[str, Any]:
    """Random sizes for the configuration sweep: heads, expert counts, dense (``mlp_only``) layers."""
    layers = rng.randint(1, 3)
    experts = rng.randint(2, 4)
    return dict(
        hidden_size=rng.choice([4, 8, 12]),
        intermediate_size=rng.choice([4, 8]),
        num_hidden_layers=layers,
        head_dim=rng.choice([2, 4]),
        **attention_heads(rng),
        num_experts=experts,
        num_experts_per_tok=rng.randint(1, min(2, experts)),
        moe_intermediate_size=rng.choice([4, 6, 8]),
        decoder_sparse_step=rng.randint(1, 2),
        mlp_only_layers=subset(rng, layers),
        norm_topk_prob=rng.random() < 0.5,
    )


QWEN3_MOE = ModelFamily(
    name="qwen3_moe",
    mixers={},
    norms={modeling_qwen3_moe.Qwen3MoeRMSNorm: RMSNormRule},
    containers=(
        modeling_qwen3_moe.Qwen3MoeModel,
        modeling_qwen3_moe.Qwen3MoeForCausalLM,
        modeling_qwen3_moe.Qwen3MoeRotaryEmbedding,  # positions -> cos, sin: no relevance path
        modeling_qwen3_moe.Qwen3MoeSparseMoeBlock,  # route, then the experts: nothing non-linear of its own
        modeling_qwen3_moe.Qwen3MoeTopKRouter,  # feeds only the indices and the held-constant weights
    ),
    rules={
        modeling_qwen3_moe.Qwen3MoeDecoderLayer: OwnForwardRule(),
        modeling_qwen3_moe.Qwen3MoeAttention: AttentionRule(),
        modeling_qwen3_moe.Qwen3MoeMLP: GatedMLPRule(),  # the dense layers (mlp_only_layers)
        modeling_qwen3_moe.Qwen3MoeExperts: ExpertsRule(),
        SiLUActivation: SiLUIdentityRule,
    },
    causal_lm=modeling_qwen3_moe.Qwen3MoeForCausalLM,
    config=tiny_config,
    random_config=random_config,
    canonizable=False,
)
