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
constant. transformers ships no sequence classifier for either model.
"""

from __future__ import annotations

from typing import Any

from transformers.models.lfm2 import configuration_lfm2, modeling_lfm2
from transformers.models.lfm2_moe import configuration_lfm2_moe, modeling_lfm2_moe

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.mixers.short_conv import GatedShortConvLayout
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.block import OwnForwardRule
from captum_mamba.rules.mlp import GatedMLPRule
from captum_mamba.rules.moe import ExpertsRule
from captum_mamba.rules.norm import RMSNormRule
from captum_mamba.rules.silu import SiLUIdentityRule

#: The layers and sizes both tiny test configurations share.
_TINY: dict[str, Any] = dict(
    vocab_size=40,
    hidden_size=16,
    intermediate_size=24,
    num_hidden_layers=3,
    layer_types=["conv", "full_attention", "conv"],
    num_attention_heads=4,
    num_key_value_heads=2,
    conv_L_cache=3,
    conv_bias=False,
    tie_word_embeddings=False,
    use_cache=False,
    pad_token_id=None,
    bos_token_id=None,
    eos_token_id=None,
)


def tiny_config(**overrides: Any) -> configuration_lfm2.Lfm2Config:
    r"""
    A tiny bias-free LFM2 configuration for tests: three layers (gated short convolution of 3
    taps, attention, gated short convolution) with SwiGLU MLPs of 24 (not resized:
    ``block_auto_adjust_ff_dim=False``); attention with 4 query heads of 4 over 2 key/value heads;
    no pad / end-of-text ids (a vocabulary of 40).
    """
    return configuration_lfm2.Lfm2Config(**{**_TINY, "block_auto_adjust_ff_dim": False, **overrides})


def tiny_moe_config(**overrides: Any) -> configuration_lfm2_moe.Lfm2MoeConfig:
    r"""
    A tiny bias-free LFM2-MoE configuration for tests: LFM2's layers (:func:`tiny_config`), a dense
    SwiGLU MLP in layer 0 and four experts of 8 (top 2, expert bias on) in layers 1 and 2; eager
    experts (transformers' grouped_mm takes no float64).
    """
    settings = dict(
        _TINY,
        moe_intermediate_size=8,
        num_dense_layers=1,
        num_experts=4,
        num_experts_per_tok=2,
        experts_implementation="eager",
    )
    return configuration_lfm2_moe.Lfm2MoeConfig(**{**settings, **overrides})


#: LFM2's MLPs call SiLU as a function: its identity rule is applied by the MLP rule.
_SWIGLU = GatedMLPRule(gate_proj="w1", up_proj="w3", down_proj="w2", activation=SiLUIdentityRule())

LFM2 = ModelFamily(
    name="lfm2",
    mixers={modeling_lfm2.Lfm2ShortConv: GatedShortConvLayout()},
    norms={modeling_lfm2.Lfm2RMSNorm: RMSNormRule},
    containers=(
        modeling_lfm2.Lfm2Model,
        modeling_lfm2.Lfm2ForCausalLM,
        modeling_lfm2.Lfm2RotaryEmbedding,  # positions -> cos, sin: no relevance path
    ),
    rules={
        modeling_lfm2.Lfm2DecoderLayer: OwnForwardRule(),
        modeling_lfm2.Lfm2Attention: AttentionRule(),
        modeling_lfm2.Lfm2MLP: _SWIGLU,
    },
    causal_lm=modeling_lfm2.Lfm2ForCausalLM,
    config=tiny_config,
    canonizable=False,
)

LFM2_MOE = ModelFamily(
    name="lfm2_moe",
    mixers={modeling_lfm2_moe.Lfm2MoeShortConv: GatedShortConvLayout()},
    norms={modeling_lfm2_moe.Lfm2MoeRMSNorm: RMSNormRule},
    containers=(
        modeling_lfm2_moe.Lfm2MoeModel,
        modeling_lfm2_moe.Lfm2MoeForCausalLM,
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
    config=tiny_moe_config,
    canonizable=False,
)
