r"""Hugging Face Falcon-H1 (TII): attention and a Mamba-2 mixer in parallel in every layer, SwiGLU MLPs.

Each decoder layer normalises its input once and runs both branches on it:
``h + ssm_out · mixer(n) + attn_out · attention(attn_in · n)``, then ``h + mlp(norm(h))``. The
µP multipliers (on the embeddings, the attention's input, keys and output, the mixer's input,
the five parts of its ``in_proj`` output — the ``mup_vector`` —, its output, the MLP's gate
branch and output, the LM head) are constants, so relevance passes them linearly (LRP-0); the
two branches share the normed input and their relevances meet there.

Note: the model multiplies the embeddings by ``embedding_multiplier`` only when it embeds
``input_ids`` itself; ``inputs_embeds`` are taken as they are. Explaining token ids at the
embedding layer (``LayerMambaLRP(model, model.get_input_embeddings())``) follows the model's
``input_ids`` path; explaining ``inputs_embeds`` explains the model on those embeddings.

Its tiny test configuration (``config``) has two layers with every µP multiplier away from one,
a grouped gated norm after the gate (as in the checkpoints) and SDPA attention;
``random_config`` draws the sizes, the heads and groups, the gated norm's options and the
multipliers (see :mod:`captum_mamba.families.tiny`).
"""

from __future__ import annotations

import random
from typing import Any

from torch import Tensor, nn
from transformers import FalconH1Config
from transformers.activations import SiLUActivation
from transformers.models.falcon_h1 import modeling_falcon_h1

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.families.tiny import FLOAT64_ATTENTION, VOCAB, attention_heads, divisor
from captum_mamba.heads import FalconH1ForSequenceClassification
from captum_mamba.mixers.layouts import Mamba2Layout
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.block import OwnForwardRule
from captum_mamba.rules.mlp import GatedMLPRule
from captum_mamba.rules.norm import GatedRMSNormRule, RMSNormRule
from captum_mamba.rules.silu import SiLUIdentityRule


class FalconH1MixerLayout(Mamba2Layout):
    r"""
    Falcon-H1's Mamba-2 mixer: the input scaled by ``ssm_in_multiplier`` and ``in_proj``'s output
    by the µP vector (``mup_vector``: one constant for each of ``z``, ``x``, ``B``, ``C``, ``dt``),
    as the model does; the gated norm is optional (``mamba_rms_norm``; without it the mixer gates
    ``y · silu(z)``) and may normalise before gating (``norm_before_gate``, handled by
    :class:`~captum_mamba.rules.GatedRMSNormRule`).
    """

    def project(self, mixer: nn.Module, hidden: Tensor) -> Tensor:
        # constants on both sides of in_proj: a linear map, relevance passes as it is
        projected = mixer.in_proj(hidden * mixer.ssm_in_multiplier)
        return projected * mixer.mup_vector

    def norm(self, mixer: nn.Module) -> nn.Module | None:
        return mixer.norm if mixer.mamba_rms_norm else None


def tiny_config(**overrides: Any) -> FalconH1Config:
    """A tiny bias-free Falcon-H1 configuration for tests: two layers, µP multipliers away from one, a grouped norm."""
    settings: dict[str, Any] = dict(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=4,
        mamba_d_ssm=16,
        mamba_n_heads=4,
        mamba_d_head=4,
        mamba_n_groups=2,
        mamba_d_state=4,
        mamba_d_conv=4,
        mamba_chunk_size=4,
        mamba_conv_bias=False,
        mamba_proj_bias=False,
        mamba_rms_norm=True,
        mamba_norm_before_gate=False,
        attention_in_multiplier=0.7,
        attention_out_multiplier=1.3,
        key_multiplier=0.9,
        ssm_in_multiplier=0.8,
        ssm_out_multiplier=1.2,
        ssm_multipliers=[1.1, 0.9, 1.2, 0.7, 1.3],
        mlp_multipliers=[1.1, 0.6],
        embedding_multiplier=1.5,
        lm_head_multiplier=0.8,
        use_cache=False,
        tie_word_embeddings=False,
        **FLOAT64_ATTENTION,
    )
    return FalconH1Config(**{**settings, **overrides})


def random_config(rng: random.Random) -> dict[str, Any]:
    """Random sizes for the configuration sweep: heads and groups, the gated norm's options, the µP multipliers."""
    mamba_heads, mamba_head_dim = rng.choice([1, 2, 4]), rng.choice([2, 4])

    def multiplier() -> float:
        return rng.choice([0.6, 1.0, 1.3])

    return dict(
        hidden_size=rng.choice([4, 8]),
        intermediate_size=rng.choice([4, 8]),
        num_hidden_layers=rng.randint(1, 3),
        head_dim=rng.choice([2, 4]),  # even: rotary pairs
        **attention_heads(rng),
        mamba_d_ssm=mamba_heads * mamba_head_dim,
        mamba_n_heads=mamba_heads,
        mamba_d_head=mamba_head_dim,
        mamba_n_groups=divisor(rng, mamba_heads),
        mamba_d_state=rng.randint(1, 6),
        mamba_d_conv=rng.randint(1, 4),
        mamba_chunk_size=rng.randint(1, 8),
        mamba_rms_norm=rng.random() < 0.7,
        mamba_norm_before_gate=rng.random() < 0.5,
        attention_in_multiplier=multiplier(),
        attention_out_multiplier=multiplier(),
        key_multiplier=multiplier(),
        ssm_in_multiplier=multiplier(),
        ssm_out_multiplier=multiplier(),
        ssm_multipliers=[multiplier() for _ in range(5)],
        mlp_multipliers=[multiplier(), multiplier()],
        embedding_multiplier=multiplier(),
        lm_head_multiplier=multiplier(),
    )


FALCON_H1 = ModelFamily(
    name="falcon_h1",
    mixers={modeling_falcon_h1.FalconH1Mixer: FalconH1MixerLayout()},
    norms={
        modeling_falcon_h1.FalconH1RMSNorm: RMSNormRule,
        modeling_falcon_h1.FalconH1RMSNormGated: GatedRMSNormRule,
    },
    containers=(
        modeling_falcon_h1.FalconH1Model,
        modeling_falcon_h1.FalconH1ForCausalLM,
        FalconH1ForSequenceClassification,
        modeling_falcon_h1.FalconH1RotaryEmbedding,  # positions -> cos, sin: no relevance path
    ),
    rules={
        # both branches and the multipliers in the layer's own forward: sums and constant factors
        modeling_falcon_h1.FalconH1DecoderLayer: OwnForwardRule(),
        modeling_falcon_h1.FalconH1Attention: AttentionRule(),
        modeling_falcon_h1.FalconH1MLP: GatedMLPRule(
            gate_multiplier="gate_multiplier", down_multiplier="down_multiplier"
        ),
        SiLUActivation: SiLUIdentityRule,
    },
    causal_lm=modeling_falcon_h1.FalconH1ForCausalLM,
    classifier=FalconH1ForSequenceClassification,
    config=tiny_config,
    random_config=random_config,
    canonizable=False,
)
