"""Hugging Face Qwen3-Next: Gated DeltaNet layers, gated attention every few layers, MoE feed-forwards.

Every layer is ``h + mixer(norm(h))`` (a Gated DeltaNet, :class:`~captum_mamba.mixers.gated_delta.
Qwen3NextGatedDeltaLayout`, or an attention module), then ``h + ffn(norm(h))`` with a SwiGLU MLP
or a sparse mixture of SwiGLU experts plus a sigmoid-gated shared expert. The norms are
zero-centred (``rmsnorm(x) · (1 + w)``); the attention normalises ``q`` and ``k`` per head, rotates
part of each head, and gates its output, ``attention · σ(g)``, with ``g`` from ``q_proj``.

The rules: the gated delta rule with ``α``, ``β``, ``k``, ``q`` held constant; the output's gated
RMSNorm as Mamba-2's (normaliser held constant, SiLU rule, half rule); AttnLRP / CP-LRP with the
half rule and the sigmoid's identity rule on the output gate; the experts rule (routing weights
held constant) and the shared expert's gate held constant too (:class:`~captum_mamba.rules.moe.
MoEBlockRule`); RMSNorms with their normaliser held constant.

Its tiny test configuration (``config``) is the Gated DeltaNet hybrids' shared layers plus a
fourth Gated DeltaNet and experts in every other layer, with SDPA attention and eager experts;
``random_config`` draws the sizes, which layers are Gated DeltaNets or attention, the attention's
(grouped) heads, the Gated DeltaNets' key and value heads and head sizes, the convolution's taps,
the experts and which layers route to them (see :mod:`captum_mamba.families.tiny`). transformers'
own ``Qwen3NextForSequenceClassification`` is the family's sequence classifier (the shared suite
checks it).
"""

from __future__ import annotations

import random
from typing import Any

from transformers import Qwen3NextConfig
from transformers.activations import SiLUActivation
from transformers.models.qwen3_next import modeling_qwen3_next

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.families.tiny import (
    FLOAT64_EXPERTS,
    FULL_ATTENTION,
    LINEAR_ATTENTION,
    gated_delta_settings,
    random_gated_delta_layers,
    subset,
)
from captum_mamba.mixers.gated_delta import Qwen3NextGatedDeltaLayout
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.block import OwnForwardRule
from captum_mamba.rules.mlp import GatedMLPRule
from captum_mamba.rules.moe import ExpertsRule, MoEBlockRule
from captum_mamba.rules.norm import GatedRMSNormRule, RMSNormRule
from captum_mamba.rules.silu import SiLUIdentityRule

#: The experts of the tiny Qwen3-Next and Qwen3.5-MoE configurations: four of 8 (top 2) and a shared expert of 8.
TINY_EXPERTS: dict[str, Any] = dict(
    num_experts=4,
    num_experts_per_tok=2,
    moe_intermediate_size=8,
    shared_expert_intermediate_size=8,
    **FLOAT64_EXPERTS,
)


def tiny_config(**overrides: Any) -> Qwen3NextConfig:
    r"""
    A tiny bias-free Qwen3-Next configuration for tests: the Gated DeltaNet hybrids' shared layers
    (:func:`~captum_mamba.families.tiny.gated_delta_settings`) with a fourth Gated DeltaNet layer;
    dense SwiGLU MLPs in layers 0 and 2, four experts (top 2) with a shared expert in layers 1 and
    3 (``decoder_sparse_step=2``; the top 2 renormalised); eager experts (transformers' grouped_mm takes no float64).
    """
    settings = gated_delta_settings()
    settings.update(
        num_hidden_layers=4,
        layer_types=[LINEAR_ATTENTION, FULL_ATTENTION, LINEAR_ATTENTION, LINEAR_ATTENTION],
        decoder_sparse_step=2,
        norm_topk_prob=True,
        **TINY_EXPERTS,
    )
    return Qwen3NextConfig(**{**settings, **overrides})


def random_experts(rng: random.Random) -> dict[str, Any]:
    """Random experts for the configuration sweep (Qwen3-Next, Qwen3.5-MoE): counts, top-k, sizes."""
    experts = rng.randint(2, 4)
    return dict(
        num_experts=experts,
        num_experts_per_tok=rng.randint(1, min(2, experts)),
        moe_intermediate_size=rng.choice([4, 8]),
        shared_expert_intermediate_size=rng.choice([4, 8]),
    )


def random_config(rng: random.Random) -> dict[str, Any]:
    """Random Qwen3-Next configurations: the Gated DeltaNet hybrids' layers, experts, which layers are sparse."""
    settings = random_gated_delta_layers(rng)
    return dict(
        settings,
        **random_experts(rng),
        norm_topk_prob=rng.random() < 0.5,  # Qwen3.5-MoE always renormalises
        decoder_sparse_step=rng.randint(1, 3),
        mlp_only_layers=subset(rng, settings["num_hidden_layers"]),  # dense MLPs there whatever the step
    )


QWEN3_NEXT = ModelFamily(
    name="qwen3_next",
    mixers={modeling_qwen3_next.Qwen3NextGatedDeltaNet: Qwen3NextGatedDeltaLayout()},
    norms={
        modeling_qwen3_next.Qwen3NextRMSNorm: RMSNormRule(
            weight_offset=1.0, scale_before_cast=True
        ),  # zero-centred: (1 + w)
        modeling_qwen3_next.Qwen3NextRMSNormGated: GatedRMSNormRule(norm_before_gate=True),
    },
    containers=(
        modeling_qwen3_next.Qwen3NextModel,
        modeling_qwen3_next.Qwen3NextForCausalLM,
        modeling_qwen3_next.Qwen3NextForSequenceClassification,  # a linear score read at the last real token
        modeling_qwen3_next.Qwen3NextRotaryEmbedding,  # positions -> cos, sin: no relevance path
        modeling_qwen3_next.Qwen3NextTopKRouter,  # feeds only the indices and the held-constant weights
    ),
    rules={
        modeling_qwen3_next.Qwen3NextDecoderLayer: OwnForwardRule(),
        modeling_qwen3_next.Qwen3NextAttention: AttentionRule(),  # output gate: half rule, sigmoid identity rule
        modeling_qwen3_next.Qwen3NextMLP: GatedMLPRule(),  # dense layers and the shared expert
        modeling_qwen3_next.Qwen3NextExperts: ExpertsRule(),
        modeling_qwen3_next.Qwen3NextSparseMoeBlock: MoEBlockRule(),  # the shared expert's gate held constant
        SiLUActivation: SiLUIdentityRule,
    },
    causal_lm=modeling_qwen3_next.Qwen3NextForCausalLM,
    config=tiny_config,
    random_config=random_config,
    canonizable=False,
)
