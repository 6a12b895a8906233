"""Hugging Face Granite 4.0 hybrid (IBM ``granitemoehybrid``; Mamba-2, attention, SwiGLU MLPs, mixtures of experts).

Each decoder layer is ``h + m·mixer(norm(h))`` with a Mamba-2 mixer or an attention module
(rotary embeddings optional), then ``h + m·mlp(norm(h))`` with the shared SwiGLU MLP (one
``input_linear`` holding both branches). The µP multipliers are constants of the model's own
forwards, linear maps that pass relevance as they are (LRP-0): the ``embedding_multiplier`` on
the embeddings, the ``residual_multiplier`` ``m`` on each update, the ``logits_scaling`` dividing
the logits, and the ``attention_multiplier``, which replaces ``1/sqrt(head_dim)`` as the attention
scaling and reaches the attention rules as the ``scaling`` argument of transformers' attention
interface.

When ``num_local_experts > 0`` a mixture of SwiGLU experts runs beside the shared MLP, the two
outputs summed: ``GraniteMoeHybridMoE`` flattens the tokens, routes them
(``GraniteMoeHybridTopKRouter``: logits in float32, top-k, softmax over the chosen logits) and
calls the experts (``GraniteMoeHybridExperts``, under :class:`~captum_mamba.rules.moe.ExpertsRule`:
routing weights held constant, the SiLU rule and the half rule in each expert). The wrapper does
nothing non-linear beyond the router and the experts, so it and the router are containers. (The
router returns ``(logits, weights, indices)`` in newer releases (5.24), ``(indices, weights,
logits)`` in older ones (5.17); the wrapper of the same release unpacks it, so the order does
not matter to the rules, nor do the experts' masks, which only the eager forward builds.)

Its tiny test configuration (``config``) is a Mamba-2 layer and an attention layer (rotary
embeddings), dense (no experts), with µP multipliers away from one, SDPA attention (and eager
experts where experts are asked for); ``random_config`` draws the sizes, the layer types, the
multipliers, rotary embeddings or none and the expert counts (see :mod:`captum_mamba.families.tiny`).
"""

from __future__ import annotations

import random
from typing import Any

from transformers import GraniteMoeHybridConfig
from transformers.activations import SiLUActivation
from transformers.models.granitemoehybrid import modeling_granitemoehybrid as modeling

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.families.tiny import FLOAT64_EXPERTS, VOCAB, attention_heads, divisor
from captum_mamba.heads import GraniteMoeHybridForSequenceClassification
from captum_mamba.mixers.layouts import Mamba2Layout
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.block import OwnForwardRule
from captum_mamba.rules.mlp import GatedMLPRule
from captum_mamba.rules.moe import ExpertsRule
from captum_mamba.rules.norm import GatedRMSNormRule, RMSNormRule
from captum_mamba.rules.silu import SiLUIdentityRule


def tiny_config(**overrides: Any) -> GraniteMoeHybridConfig:
    """A tiny bias-free Granite 4.0 hybrid configuration for tests: Mamba-2 then attention, shared MLPs, µP multipliers."""
    settings: dict[str, Any] = dict(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=2,
        layer_types=["linear_attention", "full_attention"],
        shared_intermediate_size=24,
        num_local_experts=0,
        position_embedding_type="rope",
        num_attention_heads=4,
        num_key_value_heads=2,
        mamba_n_heads=4,
        mamba_d_head=8,
        mamba_n_groups=2,
        mamba_d_state=8,
        mamba_chunk_size=16,
        mamba_conv_bias=False,
        embedding_multiplier=1.7,
        residual_multiplier=0.6,
        attention_multiplier=0.35,  # the attention scaling, instead of 1/sqrt(head_dim) = 0.5
        logits_scaling=2.5,
        use_cache=False,
        tie_word_embeddings=False,
        **FLOAT64_EXPERTS,
    )
    return GraniteMoeHybridConfig(**{**settings, **overrides})


def random_config(rng: random.Random) -> dict[str, Any]:
    """Random sizes for the configuration sweep: layer types, multipliers, rotary embeddings, expert counts."""
    heads = attention_heads(rng)
    hidden = heads["num_attention_heads"] * rng.choice([2, 4])  # even head size: rotary pairs
    expand = rng.choice([1, 2])
    mamba_heads = divisor(rng, hidden * expand)
    layers = rng.randint(1, 3)
    experts = rng.choice([0, 2, 3, 4])
    return dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        layer_types=[rng.choice(["linear_attention", "full_attention"]) for _ in range(layers)],
        shared_intermediate_size=rng.choice([4, 8, 12]),
        num_local_experts=experts,
        num_experts_per_tok=rng.randint(1, min(2, max(experts, 1))),
        intermediate_size=rng.choice([4, 6]),  # each expert's
        position_embedding_type=rng.choice(["rope", None]),
        **heads,
        mamba_expand=expand,
        mamba_n_heads=mamba_heads,
        mamba_d_head=hidden * expand // mamba_heads,
        mamba_n_groups=divisor(rng, mamba_heads),
        mamba_d_state=rng.randint(1, 6),
        mamba_d_conv=rng.randint(1, 4),
        mamba_chunk_size=rng.randint(1, 8),
        embedding_multiplier=rng.choice([0.5, 1.0, 1.7]),
        residual_multiplier=rng.choice([0.4, 1.0]),
        attention_multiplier=rng.choice([0.25, 0.5, 1.0]),
        logits_scaling=rng.choice([1.0, 2.5]),
    )


GRANITEMOEHYBRID = ModelFamily(
    name="granitemoehybrid",
    mixers={modeling.GraniteMoeHybridMambaLayer: Mamba2Layout()},
    norms={modeling.GraniteMoeHybridRMSNorm: RMSNormRule, modeling.GraniteMoeHybridRMSNormGated: GatedRMSNormRule},
    containers=(
        modeling.GraniteMoeHybridModel,
        modeling.GraniteMoeHybridForCausalLM,
        GraniteMoeHybridForSequenceClassification,
        modeling.GraniteMoeHybridRotaryEmbedding,  # positions -> cos, sin: no relevance path
        modeling.GraniteMoeHybridMoE,  # route, then the experts: nothing non-linear of its own
        modeling.GraniteMoeHybridTopKRouter,  # feeds only the indices and the held-constant weights
    ),
    rules={
        modeling.GraniteMoeHybridDecoderLayer: OwnForwardRule(),
        modeling.GraniteMoeHybridAttention: AttentionRule(),
        modeling.GraniteMoeHybridMLP: GatedMLPRule(
            gate_up_proj="input_linear", down_proj="output_linear", act="activation"
        ),
        modeling.GraniteMoeHybridExperts: ExpertsRule(),
        SiLUActivation: SiLUIdentityRule,
    },
    causal_lm=modeling.GraniteMoeHybridForCausalLM,
    classifier=GraniteMoeHybridForSequenceClassification,
    config=tiny_config,
    random_config=random_config,
    canonizable=False,
)
