"""Hugging Face Jamba (AI21): Mamba-1 mixers with RMSNorms on dt, B, C, a few attention layers, MoE feed-forwards.

Every layer is ``h + mixer(norm(h))`` (a Mamba-1 mixer or attention without positional
embeddings), then ``h + ffn(norm(h))`` with a SwiGLU MLP or, in every ``expert_layer_period``-th
layer, a sparse mixture of SwiGLU experts. The mixer's norms on ``dt``, ``B`` and ``C`` have
weights (FalconMamba's have none) but sit on the same held-constant selection path, read by the
same layout; they are ``JambaRMSNorm`` modules like the residual stream's, so they get the
RMSNorm rule, whose gradient the SSM rule discards.

Its tiny test configuration (``config``) has Mamba-1 layers around one attention layer and
experts (top 2 of 4) in every other layer, a dense MLP between, with SDPA attention and eager
experts; ``random_config`` draws the sizes, the attention and expert layers' periods and offsets
and the expert counts (see :mod:`captum_mamba.families.tiny`).
"""

from __future__ import annotations

import random
from typing import Any

from transformers import JambaConfig
from transformers.activations import SiLUActivation
from transformers.models.jamba import modeling_jamba

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.families.tiny import FLOAT64_EXPERTS, VOCAB, attention_heads
from captum_mamba.mixers.layouts import NormalisedSelectionLayout
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.block import OwnForwardRule
from captum_mamba.rules.mlp import GatedMLPRule
from captum_mamba.rules.moe import ExpertsRule
from captum_mamba.rules.norm import RMSNormRule
from captum_mamba.rules.silu import SiLUIdentityRule

# Newer releases (5.24) route with a JambaTopKRouter module (logits, softmax, top-k); older ones (5.17)
# with an nn.Linear, the block computing the top-k itself. Either way the router's output reaches the
# experts only as the indices and the routing weights, which the experts rule holds constant.
_ROUTERS = tuple(router for router in (getattr(modeling_jamba, "JambaTopKRouter", None),) if router is not None)


def tiny_config(**overrides: Any) -> JambaConfig:
    """A tiny bias-free Jamba configuration for tests: experts in layers 0 and 2, attention in layer 1."""
    settings: dict[str, Any] = dict(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        attn_layer_period=3,
        attn_layer_offset=1,
        num_experts=4,
        num_experts_per_tok=2,
        expert_layer_period=2,
        expert_layer_offset=0,
        mamba_d_state=8,
        mamba_d_conv=4,
        mamba_expand=2,
        mamba_dt_rank=4,
        mamba_conv_bias=False,
        mamba_proj_bias=False,
        use_cache=False,
        tie_word_embeddings=False,
        **FLOAT64_EXPERTS,
    )
    return JambaConfig(**{**settings, **overrides})


def random_config(rng: random.Random) -> dict[str, Any]:
    """Random sizes for the configuration sweep: layer periods and offsets, expert counts, Mamba-1 sizes."""
    heads = attention_heads(rng)
    attention_period, expert_period = rng.randint(1, 3), rng.randint(1, 3)
    experts = rng.randint(2, 4)
    return dict(
        hidden_size=heads["num_attention_heads"] * rng.choice([2, 3, 4]),  # no positional embedding: any head size
        intermediate_size=rng.choice([4, 8, 12]),
        num_hidden_layers=rng.randint(1, 4),
        **heads,
        attn_layer_period=attention_period,
        attn_layer_offset=rng.randrange(attention_period),
        expert_layer_period=expert_period,
        expert_layer_offset=rng.randrange(expert_period),
        num_experts=experts,
        num_experts_per_tok=rng.randint(1, 2),
        mamba_d_state=rng.randint(1, 6),
        mamba_d_conv=rng.randint(1, 4),
        mamba_expand=rng.choice([1, 2]),
        mamba_dt_rank=rng.randint(1, 4),
    )


JAMBA = ModelFamily(
    name="jamba",
    mixers={modeling_jamba.JambaMambaMixer: NormalisedSelectionLayout()},
    norms={modeling_jamba.JambaRMSNorm: RMSNormRule},
    containers=(
        modeling_jamba.JambaModel,
        modeling_jamba.JambaForCausalLM,
        modeling_jamba.JambaSparseMoeBlock,  # route, then the experts: nothing non-linear of its own
        *_ROUTERS,
    ),
    rules={
        modeling_jamba.JambaAttentionDecoderLayer: OwnForwardRule(),
        modeling_jamba.JambaMambaDecoderLayer: OwnForwardRule(),
        modeling_jamba.JambaAttention: AttentionRule(),
        modeling_jamba.JambaMLP: GatedMLPRule(),
        modeling_jamba.JambaExperts: ExpertsRule(),
        SiLUActivation: SiLUIdentityRule,
    },
    causal_lm=modeling_jamba.JambaForCausalLM,
    config=tiny_config,
    random_config=random_config,
    canonizable=False,
)
