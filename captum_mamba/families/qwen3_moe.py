"""Hugging Face Qwen3-MoE: Qwen3's attention with sparse mixtures of SwiGLU experts as feed-forwards."""

from __future__ import annotations

from transformers.activations import SiLUActivation
from transformers.models.qwen3_moe import modeling_qwen3_moe

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.block import OwnForwardRule
from captum_mamba.rules.mlp import GatedMLPRule
from captum_mamba.rules.moe import ExpertsRule
from captum_mamba.rules.norm import RMSNormRule
from captum_mamba.rules.silu import SiLUIdentityRule

QWEN3_MOE = ModelFamily(
    name="qwen3_moe",
    mixers={},
    norms={modeling_qwen3_moe.Qwen3MoeRMSNorm: RMSNormRule},
    containers=(
        modeling_qwen3_moe.Qwen3MoeModel,
        modeling_qwen3_moe.Qwen3MoeForCausalLM,
        modeling_qwen3_moe.Qwen3MoeRotaryEmbedding,  # positions -> cos, sin: no relevance path
        modeling_qwen3_moe.Qwen3MoeSparseMoeBlock,  # route, then the experts: nothing non-linear of its own
        modeling_qwen3_moe.Qwen3MoeTopKRouter,  # feeds only the indices and the held-constant weights
    ),
    rules={
        modeling_qwen3_moe.Qwen3MoeDecoderLayer: OwnForwardRule(),
        modeling_qwen3_moe.Qwen3MoeAttention: AttentionRule(),
        modeling_qwen3_moe.Qwen3MoeMLP: GatedMLPRule(),  # the dense layers (mlp_only_layers)
        modeling_qwen3_moe.Qwen3MoeExperts: ExpertsRule(),
        SiLUActivation: SiLUIdentityRule,
    },
    causal_lm=modeling_qwen3_moe.Qwen3MoeForCausalLM,
    canonizable=False,
)
