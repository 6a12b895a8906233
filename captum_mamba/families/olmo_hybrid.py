"""Hugging Face OLMo hybrid (Ai2): Gated DeltaNet layers and attention layers, SwiGLU MLPs.

A linear-attention layer is ``h + gdn(norm(h))``, then ``h + mlp(norm(h))``; an attention layer
normalises after its sublayers (``h + norm(attention(h))``, ``h + norm(mlp(h))``), its ``q`` and
``k`` normalised over all heads (OLMo's q/k norms), rotary embeddings optional (NoPE). The Gated
DeltaNet (:class:`~captum_mamba.mixers.gated_delta.OlmoHybridGatedDeltaLayout`) has one projection
each for ``q``, ``k``, ``v``, the gate, ``a`` and ``b``, and allows negative eigenvalues
(``β = 2σ(b)``). The norms on the residual branches are RMSNorms with their normaliser held
constant (their scale passes relevance element-wise). transformers ships no sequence classifier
for it: the package's :class:`~captum_mamba.heads.OlmoHybridForSequenceClassification` is declared.

Its tiny test configuration (``config``) is the Gated DeltaNet hybrids' shared layers with
negative eigenvalues allowed; ``random_config`` draws the sizes, the layer pattern (at least one
Gated DeltaNet and one attention layer, as OLMo hybrid requires), the attention's (grouped) heads,
the Gated DeltaNets' key and value heads and head sizes, the convolution's taps, β's range and
rotary embeddings or none (:func:`nope`; see :mod:`captum_mamba.families.tiny`).
"""

from __future__ import annotations

import random
from typing import Any

from transformers.activations import SiLUActivation
from transformers.models.olmo_hybrid import configuration_olmo_hybrid, modeling_olmo_hybrid

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.families.tiny import gated_delta_settings, random_gated_delta_layers
from captum_mamba.heads import OlmoHybridForSequenceClassification
from captum_mamba.mixers.gated_delta import OlmoHybridGatedDeltaLayout
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.block import OwnForwardRule
from captum_mamba.rules.mlp import GatedMLPRule
from captum_mamba.rules.norm import GatedRMSNormRule, RMSNormRule
from captum_mamba.rules.silu import SiLUIdentityRule


def nope() -> dict[str, Any]:
    """The settings of an OLMo hybrid without rotary embeddings (NoPE: its attention sees no positions), fresh."""
    return dict(rope_parameters={"rope_type": "default", "rope_theta": None})


def tiny_config(**overrides: Any) -> configuration_olmo_hybrid.OlmoHybridConfig:
    r"""
    A tiny bias-free OLMo hybrid configuration for tests: the Gated DeltaNet hybrids' shared layers
    (:func:`~captum_mamba.families.tiny.gated_delta_settings`: Gated DeltaNet, attention, Gated
    DeltaNet) with negative eigenvalues allowed, rotary embeddings, and no pad / end-of-text ids
    (a vocabulary of 40).
    """
    settings = dict(gated_delta_settings(), linear_allow_neg_eigval=True, pad_token_id=None, eos_token_id=None)
    return configuration_olmo_hybrid.OlmoHybridConfig(**{**settings, **overrides})


def random_config(rng: random.Random) -> dict[str, Any]:
    r"""
    Random OLMo hybrid configurations: the Gated DeltaNet hybrids' layers (each kind at least once),
    β's range (negative eigenvalues or not), rotary embeddings or none (:func:`nope`).
    """
    settings = dict(random_gated_delta_layers(rng, every_kind=True), linear_allow_neg_eigval=rng.random() < 0.5)
    return {**settings, **nope()} if rng.random() < 0.3 else settings


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
        OlmoHybridForSequenceClassification,
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
    classifier=OlmoHybridForSequenceClassification,
    config=tiny_config,
    random_config=random_config,
    canonizable=False,
)
