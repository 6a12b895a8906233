"""Hugging Face Kimi Linear (Moonshot AI): Kimi Delta Attention layers, MLA attention layers, MoE feed-forwards.

Every layer is ``h + mixer(norm(h))``, then ``h + ffn(norm(h))``. The linear-attention layers are
Kimi Delta Attention (:class:`~captum_mamba.mixers.gated_delta.KimiDeltaLayout`): the gated delta
rule with one decay per key channel, short convolutions with a SiLU on ``q|k|v``, and an output
norm gated by a sigmoid. The full-attention layers are multi-head latent attention (MLA, without
rotary embeddings): ``q`` from ``q_proj`` (or the low-rank ``q_b_proj(norm(q_a_proj(h)))``), keys
and values expanded from a normalised latent by ``kv_b_proj`` plus a key part shared by the heads;
they call transformers' attention interface. The feed-forwards are SwiGLU MLPs (the first
``first_k_dense_replace`` layers) or mixtures of SwiGLU experts routed by sigmoid scores, plus
shared experts added unweighted.

The rules: the gated delta rule with ``α`` (per channel), ``β``, ``k``, ``q`` held constant
(linear in the values; the per-channel chunk operators of :mod:`captum_mamba.kernels.gated_delta`);
the SiLU identity rule after the convolution; the gated norm with its normaliser held constant,
the half rule on ``rmsnorm(o)·w · σ(gate)`` and the sigmoid's identity rule
(:class:`~captum_mamba.rules.GatedRMSNormRule` reads the module's ``activation = "sigmoid"``);
AttnLRP / CP-LRP in the attention (its latent norms with the normaliser held constant); the
experts rule with the routing weights held constant, the shared experts as MLPs. transformers
ships no sequence classifier for the family: the package's
:class:`~captum_mamba.heads.KimiLinearForSequenceClassification` is declared.

Its tiny test configuration (``config``) has Kimi Delta Attention around one MLA layer and experts
in the last two layers, with SDPA attention and eager experts; ``random_config`` draws the sizes,
which layers are Kimi Delta Attention or MLA and which have experts, the heads and head sizes of
both, MLA's latent rank and full- or low-rank query, the experts (one group) and the convolution's
taps (see :mod:`captum_mamba.families.tiny`).
"""

from __future__ import annotations

import random
from typing import Any

from transformers.activations import SiLUActivation
from transformers.models.kimi_linear import configuration_kimi_linear, modeling_kimi_linear

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.families.tiny import FLOAT64_EXPERTS, FULL_ATTENTION, LINEAR_ATTENTION, VOCAB, layer_pattern
from captum_mamba.heads import KimiLinearForSequenceClassification
from captum_mamba.mixers.gated_delta import KimiDeltaLayout
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.block import OwnForwardRule
from captum_mamba.rules.mlp import GatedMLPRule
from captum_mamba.rules.moe import ExpertsRule
from captum_mamba.rules.norm import GatedRMSNormRule, RMSNormRule
from captum_mamba.rules.silu import SiLUIdentityRule


def tiny_config(**overrides: Any) -> configuration_kimi_linear.KimiLinearConfig:
    r"""
    A tiny bias-free Kimi Linear configuration for tests: three layers (Kimi Delta Attention, MLA
    attention, Kimi Delta Attention), a dense SwiGLU MLP in layer 0 and four experts (top 2, one
    group) with a shared expert in layers 1 and 2; Kimi Delta Attention with 3 heads of 4; MLA with
    2 heads, a latent of 8, query/key heads of 4 + 4 (no rotary part applied) and value heads of
    6, a low-rank query (rank 8) for its latent norm; no pad / end-of-text ids (a vocabulary of 40).
    SDPA attention, eager experts (transformers' grouped_mm takes no float64).
    """
    settings: dict[str, Any] = dict(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=24,
        moe_intermediate_size=8,
        num_hidden_layers=3,
        layer_types=[LINEAR_ATTENTION, FULL_ATTENTION, LINEAR_ATTENTION],
        mlp_layer_types=["dense", "sparse", "sparse"],
        num_attention_heads=2,
        num_key_value_heads=2,
        kv_lora_rank=8,
        q_lora_rank=8,
        qk_nope_head_dim=4,
        qk_rope_head_dim=4,
        v_head_dim=6,
        linear_num_heads=3,
        linear_head_dim=4,
        linear_conv_kernel_dim=4,
        num_local_experts=4,
        num_experts_per_tok=2,
        n_shared_experts=1,
        n_group=1,
        topk_group=1,
        attention_bias=False,
        tie_word_embeddings=False,
        use_cache=False,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
        **FLOAT64_EXPERTS,
    )
    return configuration_kimi_linear.KimiLinearConfig(**{**settings, **overrides})


def random_config(rng: random.Random) -> dict[str, Any]:
    r"""
    Random Kimi Linear configurations for the sweep: sizes, the layer pattern (Kimi Delta Attention
    or MLA per layer, a dense MLP or experts per layer), Kimi Delta Attention's heads and head size,
    MLA's heads, latent rank, full-rank or low-rank query and head sizes, the experts (counts, top-k,
    shared experts, renormalisation, scale; one group), convolution taps.
    """
    layers, experts, heads = rng.randint(1, 3), rng.randint(2, 4), rng.choice([1, 2])
    return dict(
        hidden_size=rng.choice([8, 12, 16]),
        intermediate_size=rng.choice([4, 8, 12]),
        moe_intermediate_size=rng.choice([4, 8]),
        num_hidden_layers=layers,
        layer_types=layer_pattern(rng, layers, (LINEAR_ATTENTION, FULL_ATTENTION)),
        mlp_layer_types=layer_pattern(rng, layers, ("dense", "sparse")),
        num_attention_heads=heads,
        num_key_value_heads=heads,  # MLA expands its keys and values to every head
        kv_lora_rank=rng.choice([4, 8]),
        q_lora_rank=rng.choice([None, 4, 8]),  # None: a full-rank q_proj
        qk_nope_head_dim=rng.choice([2, 4]),
        qk_rope_head_dim=rng.choice([2, 4]),
        v_head_dim=rng.choice([2, 4, 6]),
        linear_num_heads=rng.randint(1, 3),
        linear_head_dim=rng.choice([2, 4]),
        linear_conv_kernel_dim=rng.randint(1, 4),
        num_local_experts=experts,  # one group: its best two experts rank it, so at least two
        num_experts_per_tok=rng.randint(1, 2),
        n_shared_experts=rng.randint(1, 2),
        norm_topk_prob=rng.random() < 0.5,
        routed_scaling_factor=rng.choice([1.0, 2.5]),
    )


KIMI_LINEAR = ModelFamily(
    name="kimi_linear",
    mixers={modeling_kimi_linear.KimiLinearDeltaAttention: KimiDeltaLayout()},
    norms={
        modeling_kimi_linear.KimiLinearRMSNorm: RMSNormRule,
        # rmsnorm(o) · w · σ(gate): the module's activation is "sigmoid" (sigmoid identity rule)
        modeling_kimi_linear.KimiLinearRMSNormGated: GatedRMSNormRule(norm_before_gate=True),
    },
    containers=(
        modeling_kimi_linear.KimiLinearModel,
        modeling_kimi_linear.KimiLinearForCausalLM,
        KimiLinearForSequenceClassification,
        modeling_kimi_linear.KimiLinearMoE,  # routed experts + shared experts, summed
        modeling_kimi_linear.KimiLinearTopkRouter,  # feeds only the indices and the held-constant weights
        # its parameters are read by the layout on the held-constant path (never run under the rules)
        modeling_kimi_linear.KimiLinearForgetGate,
    ),
    rules={
        modeling_kimi_linear.KimiLinearDecoderLayer: OwnForwardRule(),
        modeling_kimi_linear.KimiLinearAttention: AttentionRule(),
        modeling_kimi_linear.KimiLinearMLP: GatedMLPRule(),  # dense layers and the shared experts
        modeling_kimi_linear.KimiLinearExperts: ExpertsRule(),
        SiLUActivation: SiLUIdentityRule,
    },
    causal_lm=modeling_kimi_linear.KimiLinearForCausalLM,
    classifier=KimiLinearForSequenceClassification,
    config=tiny_config,
    random_config=random_config,
    canonizable=False,
)
