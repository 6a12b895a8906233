"""Hugging Face Granite 4.0 hybrid (IBM ``granitemoehybrid``; Mamba-2 mixers, a few attention layers, SwiGLU MLPs).

Each decoder layer is ``h + m·mixer(norm(h))`` with a Mamba-2 mixer or an attention module
(rotary embeddings optional), then ``h + m·mlp(norm(h))`` with the shared SwiGLU MLP (one
``input_linear`` holding both branches). The µP multipliers are constants of the model's own
forwards, linear maps that pass relevance as they are (LRP-0): the ``embedding_multiplier`` on
the embeddings, the ``residual_multiplier`` ``m`` on each update, the ``logits_scaling`` dividing
the logits, and the ``attention_multiplier``, which replaces ``1/sqrt(head_dim)`` as the attention
scaling and reaches the attention rules as the ``scaling`` argument of transformers' attention
interface.

The mixture of experts that runs beside the shared MLP when ``num_local_experts > 0``
(``GraniteMoeHybridMoE``: ``GraniteMoeHybridTopKRouter``, ``GraniteMoeHybridExperts``) is not
declared: such a model is reported as unsupported.
"""

from __future__ import annotations

from transformers.models.granitemoehybrid import modeling_granitemoehybrid as modeling

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.mixers.layouts import Mamba2Layout
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.block import OwnForwardRule
from captum_mamba.rules.mlp import GatedMLPRule
from captum_mamba.rules.norm import GatedRMSNormRule, RMSNormRule

GRANITEMOEHYBRID = ModelFamily(
    name="granitemoehybrid",
    mixers={modeling.GraniteMoeHybridMambaLayer: Mamba2Layout()},
    norms={modeling.GraniteMoeHybridRMSNorm: RMSNormRule, modeling.GraniteMoeHybridRMSNormGated: GatedRMSNormRule},
    containers=(
        modeling.GraniteMoeHybridModel,
        modeling.GraniteMoeHybridForCausalLM,
        modeling.GraniteMoeHybridRotaryEmbedding,  # positions -> cos, sin: no relevance path
    ),
    rules={
        modeling.GraniteMoeHybridDecoderLayer: OwnForwardRule(),
        modeling.GraniteMoeHybridAttention: AttentionRule(),
        modeling.GraniteMoeHybridMLP: GatedMLPRule(
            gate_up_proj="input_linear", down_proj="output_linear", act="activation"
        ),
    },
    causal_lm=modeling.GraniteMoeHybridForCausalLM,
    canonizable=False,
)
