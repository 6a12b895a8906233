"""Hugging Face OLMo hybrid (Ai2): Gated DeltaNet layers and attention layers, SwiGLU MLPs.

A linear-attention layer is ``h + gdn(norm(h))``, then ``h + mlp(norm(h))``; an attention layer
normalises after its sublayers (``h + norm(attention(h))``, ``h + norm(mlp(h))``), its ``q`` and
``k`` normalised over all heads (OLMo's q/k norms), rotary embeddings optional (NoPE). The Gated
DeltaNet (:class:`~captum_mamba.mixers.gated_delta.OlmoHybridGatedDeltaLayout`) has one projection
each for ``q``, ``k``, ``v``, the gate, ``a`` and ``b``, and allows negative eigenvalues
(``β = 2σ(b)``). The norms on the residual branches are RMSNorms with their normaliser held
constant (their scale passes relevance element-wise). transformers ships no sequence classifier
for it.
"""

from __future__ import annotations

from typing import Any

from transformers.activations import SiLUActivation
from transformers.models.olmo_hybrid import configuration_olmo_hybrid, modeling_olmo_hybrid

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.mixers.gated_delta import OlmoHybridGatedDeltaLayout
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.block import OwnForwardRule
from captum_mamba.rules.mlp import GatedMLPRule
from captum_mamba.rules.norm import GatedRMSNormRule, RMSNormRule
from captum_mamba.rules.silu import SiLUIdentityRule


def tiny_config(**overrides: Any) -> configuration_olmo_hybrid.OlmoHybridConfig:
    r"""
    A tiny bias-free OLMo hybrid configuration for tests: three layers (Gated DeltaNet,
    attention, Gated DeltaNet) with SwiGLU MLPs; Gated DeltaNets with 2 key heads of 4 serving 4
    value heads of 6 (negative eigenvalues allowed), attention with 4 query heads of 8 over 2
    key/value heads and rotary embeddings; no pad / end-of-text ids (a vocabulary of 40).
    """
    settings: dict[str, Any] = dict(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=3,
        layer_types=["linear_attention", "full_attention", "linear_attention"],
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        linear_conv_kernel_dim=4,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        linear_key_head_dim=4,
        linear_value_head_dim=6,
        linear_allow_neg_eigval=True,
        attention_bias=False,
        tie_word_embeddings=False,
        use_cache=False,
        pad_token_id=None,
        eos_token_id=None,
    )
    settings.update(overrides)
    return configuration_olmo_hybrid.OlmoHybridConfig(**settings)


OLMO_HYBRID = ModelFamily(
    name="olmo_hybrid",
    mixers={modeling_olmo_hybrid.OlmoHybridGatedDeltaNet: OlmoHybridGatedDeltaLayout()},
    norms={
        modeling_olmo_hybrid.OlmoHybridRMSNorm: RMSNormRule(scale_before_cast=True),
        modeling_olmo_hybrid.OlmoHybridRMSNormGated: GatedRMSNormRule(norm_before_gate=True),
    },
    containers=(
        modeling_olmo_hybrid.OlmoHybridModel,
        modeling_olmo_hybrid.OlmoHybridForCausalLM,
        modeling_olmo_hybrid.OlmoHybridRotaryEmbedding,  # positions -> cos, sin: no relevance path
    ),
    rules={
        modeling_olmo_hybrid.OlmoHybridAttentionDecoderLayer: OwnForwardRule(),
        modeling_olmo_hybrid.OlmoHybridLinearAttentionDecoderLayer: OwnForwardRule(),
        modeling_olmo_hybrid.OlmoHybridAttention: AttentionRule(),
        modeling_olmo_hybrid.OlmoHybridMLP: GatedMLPRule(),
        SiLUActivation: SiLUIdentityRule,
    },
    causal_lm=modeling_olmo_hybrid.OlmoHybridForCausalLM,
    config=tiny_config,
    canonizable=False,
)
