"""Hugging Face Qwen3.5 and Qwen3.5-MoE (their text models): Gated DeltaNet layers and gated attention.

The layers are Qwen3-Next's (:mod:`captum_mamba.families.qwen3_next`) with the Gated DeltaNet's
projections split (``in_proj_qkv``, ``in_proj_z``, ``in_proj_b``, ``in_proj_a``:
:class:`~captum_mamba.mixers.gated_delta.SplitGatedDeltaLayout`); Qwen3.5 has a dense SwiGLU MLP
in every layer, Qwen3.5-MoE a mixture of experts with a sigmoid-gated shared expert. The rotary
embedding takes multimodal (text, height, width) positions, constants of the positions either way.
Only the text models are declared (``Qwen3_5ForCausalLM``, ``Qwen3_5TextForSequenceClassification``,
``Qwen3_5MoeForCausalLM`` and the package's :class:`~captum_mamba.heads.Qwen3_5MoeForSequenceClassification`,
as transformers ships no text classifier for Qwen3.5-MoE); the vision towers are not.

Their tiny test configurations (``config``) are the Gated DeltaNet hybrids' shared layers (Qwen3.5-MoE:
with Qwen3-Next's experts in every layer), SDPA attention, eager experts; ``random_config`` draws the
sizes, which layers are Gated DeltaNets or attention, the attention's (grouped) heads, the Gated
DeltaNets' key and value heads and head sizes, the convolution's taps and (Qwen3.5-MoE) the experts
(see :mod:`captum_mamba.families.tiny`).
"""

from __future__ import annotations

import random
from typing import Any

from transformers.activations import SiLUActivation
from transformers.models.qwen3_5 import configuration_qwen3_5, modeling_qwen3_5
from transformers.models.qwen3_5_moe import configuration_qwen3_5_moe, modeling_qwen3_5_moe

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.families.qwen3_next import TINY_EXPERTS, random_experts
from captum_mamba.families.tiny import gated_delta_settings, random_gated_delta_layers
from captum_mamba.heads import Qwen3_5MoeForSequenceClassification
from captum_mamba.mixers.gated_delta import SplitGatedDeltaLayout
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.block import OwnForwardRule
from captum_mamba.rules.mlp import GatedMLPRule
from captum_mamba.rules.moe import ExpertsRule, MoEBlockRule
from captum_mamba.rules.norm import GatedRMSNormRule, RMSNormRule
from captum_mamba.rules.silu import SiLUIdentityRule


def tiny_config(**overrides: Any) -> configuration_qwen3_5.Qwen3_5TextConfig:
    r"""
    A tiny bias-free Qwen3.5 text configuration for tests: the Gated DeltaNet hybrids' shared
    layers (:func:`~captum_mamba.families.tiny.gated_delta_settings`: Gated DeltaNet, attention,
    Gated DeltaNet) with SwiGLU MLPs.
    """
    return configuration_qwen3_5.Qwen3_5TextConfig(**{**gated_delta_settings(), **overrides})


def tiny_moe_config(**overrides: Any) -> configuration_qwen3_5_moe.Qwen3_5MoeTextConfig:
    r"""
    A tiny bias-free Qwen3.5-MoE text configuration for tests: Qwen3.5's (:func:`tiny_config`) with
    Qwen3-Next's experts in every layer (four of 8, top 2, and a shared expert); eager experts
    (transformers' grouped_mm takes no float64).
    """
    return configuration_qwen3_5_moe.Qwen3_5MoeTextConfig(**{**gated_delta_settings(), **TINY_EXPERTS, **overrides})


def random_config(rng: random.Random) -> dict[str, Any]:
    """Random Qwen3.5 configurations: the Gated DeltaNet hybrids' layers."""
    return random_gated_delta_layers(rng)


def random_moe_config(rng: random.Random) -> dict[str, Any]:
    """Random Qwen3.5-MoE configurations: the Gated DeltaNet hybrids' layers and experts (in every layer)."""
    return {**random_gated_delta_layers(rng), **random_experts(rng)}


QWEN3_5 = ModelFamily(
    name="qwen3_5",
    mixers={modeling_qwen3_5.Qwen3_5GatedDeltaNet: SplitGatedDeltaLayout()},
    norms={
        modeling_qwen3_5.Qwen3_5RMSNorm: RMSNormRule(
            weight_offset=1.0, scale_before_cast=True
        ),  # zero-centred: (1 + w)
        modeling_qwen3_5.Qwen3_5RMSNormGated: GatedRMSNormRule(norm_before_gate=True),
    },
    containers=(
        modeling_qwen3_5.Qwen3_5TextModel,
        modeling_qwen3_5.Qwen3_5ForCausalLM,
        modeling_qwen3_5.Qwen3_5TextForSequenceClassification,  # a linear score read at the last real token
        modeling_qwen3_5.Qwen3_5TextRotaryEmbedding,  # positions -> cos, sin: no relevance path
    ),
    rules={
        modeling_qwen3_5.Qwen3_5DecoderLayer: OwnForwardRule(),
        modeling_qwen3_5.Qwen3_5Attention: AttentionRule(),  # output gate: half rule, sigmoid identity rule
        modeling_qwen3_5.Qwen3_5MLP: GatedMLPRule(),
        SiLUActivation: SiLUIdentityRule,
    },
    causal_lm=modeling_qwen3_5.Qwen3_5ForCausalLM,
    config=tiny_config,
    random_config=random_config,
    canonizable=False,
)

QWEN3_5_MOE = ModelFamily(
    name="qwen3_5_moe",
    mixers={modeling_qwen3_5_moe.Qwen3_5MoeGatedDeltaNet: SplitGatedDeltaLayout()},
    norms={
        modeling_qwen3_5_moe.Qwen3_5MoeRMSNorm: RMSNormRule(weight_offset=1.0, scale_before_cast=True),
        modeling_qwen3_5_moe.Qwen3_5MoeRMSNormGated: GatedRMSNormRule(norm_before_gate=True),
    },
    containers=(
        modeling_qwen3_5_moe.Qwen3_5MoeTextModel,
        modeling_qwen3_5_moe.Qwen3_5MoeForCausalLM,
        Qwen3_5MoeForSequenceClassification,
        modeling_qwen3_5_moe.Qwen3_5MoeTextRotaryEmbedding,
        modeling_qwen3_5_moe.Qwen3_5MoeTopKRouter,  # feeds only the indices and the held-constant weights
    ),
    rules={
        modeling_qwen3_5_moe.Qwen3_5MoeDecoderLayer: OwnForwardRule(),
        modeling_qwen3_5_moe.Qwen3_5MoeAttention: AttentionRule(),
        modeling_qwen3_5_moe.Qwen3_5MoeMLP: GatedMLPRule(),  # the shared expert
        modeling_qwen3_5_moe.Qwen3_5MoeExperts: ExpertsRule(),
        modeling_qwen3_5_moe.Qwen3_5MoeSparseMoeBlock: MoEBlockRule(),  # the shared expert's gate held constant
        SiLUActivation: SiLUIdentityRule,
    },
    causal_lm=modeling_qwen3_5_moe.Qwen3_5MoeForCausalLM,
    classifier=Qwen3_5MoeForSequenceClassification,
    config=tiny_moe_config,
    random_config=random_moe_config,
    canonizable=False,
)
