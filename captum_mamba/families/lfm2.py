"""Hugging Face LFM2 and LFM2-MoE (Liquid AI): gated short convolutions, attention every few layers.

Every layer is ``h + operator(norm(h))``, then ``h + ffn(norm(h))``. The operator is a gated short
convolution ``out_proj(C ⊙ conv(B ⊙ x))`` with ``B | C | x = in_proj(h)``
(:class:`~captum_mamba.mixers.short_conv.GatedShortConvLayout`) or grouped-query attention with
per-head q/k RMSNorms and rotary embeddings. LFM2's feed-forwards are SwiGLU MLPs
``w2(silu(w1(h)) ⊙ w3(h))`` calling SiLU as a function; LFM2-MoE's first ``num_dense_layers``
are such MLPs, the others mixtures of SwiGLU experts routed by sigmoid scores (with a
routing-only expert bias), without a shared expert. The final norm is ``embedding_norm``.

The rules: the gates ``B`` and ``C`` by :class:`~captum_mamba.rules.ShortConvGateRule` (by default
the half rule on both products, chosen by measured faithfulness over holding ``B`` and ``C``
constant, see ``docs/linear_attention.md``), the convolution and projections linear; AttnLRP / CP-LRP in the
attention (its q/k norms with the normaliser held constant); the MLPs' SiLU by its identity rule
and the half rule on the branch product; the experts rule with the routing weights held
constant. transformers ships no sequence classifier for either model: the package's
:class:`~captum_mamba.heads.Lfm2ForSequenceClassification` and
:class:`~captum_mamba.heads.Lfm2MoeForSequenceClassification` are declared.

Their tiny test configurations (``config``) have gated short convolutions around one attention
layer (LFM2-MoE: experts after a dense first layer), SDPA attention and eager experts;
``conv_bias=True`` gives the convolutions and the operators' projections biases.
``random_config`` draws the sizes, which layers are convolutions or attention, the (grouped)
heads, the convolution's taps and (LFM2-MoE) the dense layers and experts (see
:mod:`captum_mamba.families.tiny`).
"""

from __future__ import annotations

import random
from typing import Any

from transformers.models.lfm2 import configuration_lfm2, modeling_lfm2
from transformers.models.lfm2_moe import configuration_lfm2_moe, modeling_lfm2_moe

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.families.tiny import (
    FLOAT64_ATTENTION,
    FLOAT64_EXPERTS,
    FULL_ATTENTION,
    VOCAB,
    attention_heads,
    layer_pattern,
)
from captum_mamba.heads import Lfm2ForSequenceClassification, Lfm2MoeForSequenceClassification
from captum_mamba.mixers.short_conv import GatedShortConvLayout
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.block import OwnForwardRule
from captum_mamba.rules.mlp import GatedMLPRule
from captum_mamba.rules.moe import ExpertsRule
from captum_mamba.rules.norm import RMSNormRule
from captum_mamba.rules.silu import SiLUIdentityRule


def _tiny_settings() -> dict[str, Any]:
    """The layers and sizes both tiny test configurations share (a fresh dictionary)."""
    return dict(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=3,
        layer_types=["conv", FULL_ATTENTION, "conv"],
        num_attention_heads=4,
        num_key_value_heads=2,
        conv_L_cache=3,
        conv_bias=False,
        tie_word_embeddings=False,
        use_cache=False,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
        **FLOAT64_ATTENTION,
    )


def tiny_config(**overrides: Any) -> configuration_lfm2.Lfm2Config:
    r"""
    A tiny bias-free LFM2 configuration for tests: three layers (gated short convolution of 3
    taps, attention, gated short convolution) with SwiGLU MLPs of 24 (not resized:
    ``block_auto_adjust_ff_dim=False``); attention with 4 query heads of 4 over 2 key/value heads
    (SDPA); no pad / end-of-text ids (a vocabulary of 40). ``conv_bias=True`` gives the
    convolutions and the operators' ``in_proj`` / ``out_proj`` biases.
    """
    return configuration_lfm2.Lfm2Config(**{**_tiny_settings(), "block_auto_adjust_ff_dim": False, **overrides})


def tiny_moe_config(**overrides: Any) -> configuration_lfm2_moe.Lfm2MoeConfig:
    r"""
    A tiny bias-free LFM2-MoE configuration for tests: LFM2's layers (:func:`tiny_config`), a dense
    SwiGLU MLP in layer 0 and four experts of 8 (top 2, expert bias on) in layers 1 and 2; eager
    experts (transformers' grouped_mm takes no float64).
    """
    settings = dict(
        _tiny_settings(),
        moe_intermediate_size=8,
        num_dense_layers=1,
        num_experts=4,
        num_experts_per_tok=2,
        **FLOAT64_EXPERTS,
    )
    return configuration_lfm2_moe.Lfm2MoeConfig(**{**settings, **overrides})


def random_config(rng: random.Random) -> dict[str, Any]:
    r"""
    Random LFM2 configurations for the sweep: sizes, the layer pattern (gated short convolution or
    attention per layer), query and key/value heads (grouped-query; head sizes 2 or 4, rotated in
    pairs), convolution taps.
    """
    heads = attention_heads(rng)
    layers = rng.randint(1, 3)
    return dict(
        hidden_size=heads["num_attention_heads"] * rng.choice([2, 4]),
        intermediate_size=rng.choice([4, 8, 12]),
        num_hidden_layers=layers,
        layer_types=layer_pattern(rng, layers, ("conv", FULL_ATTENTION)),
        **heads,
        conv_L_cache=rng.randint(1, 4),
    )


def random_moe_config(rng: random.Random) -> dict[str, Any]:
    r"""
    Random LFM2-MoE configurations: LFM2's (:func:`random_config`), how many leading layers are
    dense, the experts (counts, top-k, size, routing-only expert bias, renormalisation, scale).
    """
    settings = random_config(rng)
    experts = rng.randint(2, 4)
    return dict(
        settings,
        num_dense_layers=rng.randint(0, settings["num_hidden_layers"]),
        moe_intermediate_size=rng.choice([4, 8]),
        num_experts=experts,
        num_experts_per_tok=rng.randint(1, min(2, experts)),
        use_expert_bias=rng.random() < 0.5,
        norm_topk_prob=rng.random() < 0.5,
        routed_scaling_factor=rng.choice([1.0, 2.5]),
    )


#: LFM2's MLPs call SiLU as a function: its identity rule is applied by the MLP rule.
_SWIGLU = GatedMLPRule(gate_proj="w1", up_proj="w3", down_proj="w2", activation=SiLUIdentityRule())

LFM2 = ModelFamily(
    name="lfm2",
    mixers={modeling_lfm2.Lfm2ShortConv: GatedShortConvLayout()},
    norms={modeling_lfm2.Lfm2RMSNorm: RMSNormRule},
    containers=(
        modeling_lfm2.Lfm2Model,
        modeling_lfm2.Lfm2ForCausalLM,
        Lfm2ForSequenceClassification,
        modeling_lfm2.Lfm2RotaryEmbedding,  # positions -> cos, sin: no relevance path
    ),
    rules={
        modeling_lfm2.Lfm2DecoderLayer: OwnForwardRule(),
        modeling_lfm2.Lfm2Attention: AttentionRule(),
        modeling_lfm2.Lfm2MLP: _SWIGLU,
    },
    causal_lm=modeling_lfm2.Lfm2ForCausalLM,
    classifier=Lfm2ForSequenceClassification,
    config=tiny_config,
    random_config=random_config,
    canonizable=False,
)

LFM2_MOE = ModelFamily(
    name="lfm2_moe",
    mixers={modeling_lfm2_moe.Lfm2MoeShortConv: GatedShortConvLayout()},
    norms={modeling_lfm2_moe.Lfm2MoeRMSNorm: RMSNormRule},
    containers=(
        modeling_lfm2_moe.Lfm2MoeModel,
        modeling_lfm2_moe.Lfm2MoeForCausalLM,
        Lfm2MoeForSequenceClassification,
        modeling_lfm2_moe.Lfm2MoeRotaryEmbedding,
        modeling_lfm2_moe.Lfm2MoeSparseMoeBlock,  # route, then the experts: nothing non-linear of its own
        modeling_lfm2_moe.Lfm2MoeTopKRouter,  # feeds only the indices and the held-constant weights
    ),
    rules={
        modeling_lfm2_moe.Lfm2MoeDecoderLayer: OwnForwardRule(),
        modeling_lfm2_moe.Lfm2MoeAttention: AttentionRule(),
        modeling_lfm2_moe.Lfm2MoeMLP: _SWIGLU,
        modeling_lfm2_moe.Lfm2MoeExperts: ExpertsRule(),  # act_fn = F.silu: its identity rule
    },
    causal_lm=modeling_lfm2_moe.Lfm2MoeForCausalLM,
    classifier=Lfm2MoeForSequenceClassification,
    config=tiny_moe_config,
    random_config=random_moe_config,
    canonizable=False,
)
