"""Hugging Face Bamba (IBM; Mamba-2 mixers, a few attention layers, SwiGLU MLPs in every layer)."""

from __future__ import annotations

from transformers.models.bamba import modeling_bamba

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.heads import BambaForSequenceClassification
from captum_mamba.mixers.layouts import Mamba2Layout
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.block import OwnForwardRule
from captum_mamba.rules.mlp import GatedMLPRule
from captum_mamba.rules.norm import GatedRMSNormRule, RMSNormRule

BAMBA = ModelFamily(
    name="bamba",
    mixers={modeling_bamba.BambaMixer: Mamba2Layout()},
    norms={modeling_bamba.BambaRMSNorm: RMSNormRule, modeling_bamba.BambaRMSNormGated: GatedRMSNormRule},
    containers=(
        modeling_bamba.BambaModel,
        modeling_bamba.BambaForCausalLM,
        modeling_bamba.BambaRotaryEmbedding,
        BambaForSequenceClassification,
    ),
    rules={
        modeling_bamba.BambaDecoderLayer: OwnForwardRule(),
        modeling_bamba.BambaAttention: AttentionRule(),
        modeling_bamba.BambaMLP: GatedMLPRule(),
    },
    causal_lm=modeling_bamba.BambaForCausalLM,
    classifier=BambaForSequenceClassification,
    canonizable=False,
)
