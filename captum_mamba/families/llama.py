"""Hugging Face Llama and Qwen3 (attention-only decoders): AttnLRP / CP-LRP at the attention interface.

They share their layers with the hybrids' attention and MLP blocks: rotary embeddings (a linear
map of ``q`` and ``k`` with constant ``cos``/``sin``), grouped-query heads, RMSNorms (Qwen3 also
on ``q`` and ``k``), SwiGLU MLPs. Only the modules are declared; the models' own forwards run.
"""

from __future__ import annotations

from transformers.activations import SiLUActivation
from transformers.models.llama import modeling_llama
from transformers.models.qwen3 import modeling_qwen3

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.block import OwnForwardRule
from captum_mamba.rules.mlp import GatedMLPRule
from captum_mamba.rules.norm import RMSNormRule
from captum_mamba.rules.silu import SiLUIdentityRule

LLAMA = ModelFamily(
    name="llama",
    mixers={},
    norms={modeling_llama.LlamaRMSNorm: RMSNormRule},
    containers=(
        modeling_llama.LlamaModel,
        modeling_llama.LlamaForCausalLM,
        modeling_llama.LlamaRotaryEmbedding,  # positions -> cos, sin: no relevance path
    ),
    rules={
        modeling_llama.LlamaDecoderLayer: OwnForwardRule(),
        modeling_llama.LlamaAttention: AttentionRule(),
        modeling_llama.LlamaMLP: GatedMLPRule(),
        SiLUActivation: SiLUIdentityRule,
    },
    causal_lm=modeling_llama.LlamaForCausalLM,
    canonizable=False,
)

QWEN3 = ModelFamily(
    name="qwen3",
    mixers={},
    norms={modeling_qwen3.Qwen3RMSNorm: RMSNormRule},
    containers=(modeling_qwen3.Qwen3Model, modeling_qwen3.Qwen3ForCausalLM, modeling_qwen3.Qwen3RotaryEmbedding),
    rules={
        modeling_qwen3.Qwen3DecoderLayer: OwnForwardRule(),
        modeling_qwen3.Qwen3Attention: AttentionRule(),
        modeling_qwen3.Qwen3MLP: GatedMLPRule(),
        SiLUActivation: SiLUIdentityRule,
    },
    causal_lm=modeling_qwen3.Qwen3ForCausalLM,
    canonizable=False,
)
