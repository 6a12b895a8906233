"""Hugging Face Granite 4.0 hybrid (IBM ``granitemoehybrid``; Mamba-2, attention, SwiGLU MLPs, mixtures of experts).

Each decoder layer is ``h + m·mixer(norm(h))`` with a Mamba-2 mixer or an attention module
(rotary embeddings optional), then ``h + m·mlp(norm(h))`` with the shared SwiGLU MLP (one
``input_linear`` holding both branches). The µP multipliers are constants of the model's own
forwards, linear maps that pass relevance as they are (LRP-0): the ``embedding_multiplier`` on
the embeddings, the ``residual_multiplier`` ``m`` on each update, the ``logits_scaling`` dividing
the logits, and the ``attention_multiplier``, which replaces ``1/sqrt(head_dim)`` as the attention
scaling and reaches the attention rules as the ``scaling`` argument of transformers' attention
interface.

When ``num_local_experts > 0`` a mixture of SwiGLU experts runs beside the shared MLP, the two
outputs summed: ``GraniteMoeHybridMoE`` flattens the tokens, routes them
(``GraniteMoeHybridTopKRouter``: logits in float32, top-k, softmax over the chosen logits) and
calls the experts (``GraniteMoeHybridExperts``, under :class:`~captum_mamba.rules.moe.ExpertsRule`:
routing weights held constant, the SiLU rule and the half rule in each expert). The wrapper does
nothing non-linear beyond the router and the experts, so it and the router are containers. (The
router returns ``(logits, weights, indices)`` in newer releases (5.24), ``(indices, weights,
logits)`` in older ones (5.17); the wrapper of the same release unpacks it, so the order does
not matter to the rules, nor do the experts' masks, which only the eager forward builds.)
"""

from __future__ import annotations

from transformers.activations import SiLUActivation
from transformers.models.granitemoehybrid import modeling_granitemoehybrid as modeling

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.heads import GraniteMoeHybridForSequenceClassification
from captum_mamba.mixers.layouts import Mamba2Layout
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.block import OwnForwardRule
from captum_mamba.rules.mlp import GatedMLPRule
from captum_mamba.rules.moe import ExpertsRule
from captum_mamba.rules.norm import GatedRMSNormRule, RMSNormRule
from captum_mamba.rules.silu import SiLUIdentityRule

GRANITEMOEHYBRID = ModelFamily(
    name="granitemoehybrid",
    mixers={modeling.GraniteMoeHybridMambaLayer: Mamba2Layout()},
    norms={modeling.GraniteMoeHybridRMSNorm: RMSNormRule, modeling.GraniteMoeHybridRMSNormGated: GatedRMSNormRule},
    containers=(
        modeling.GraniteMoeHybridModel,
        modeling.GraniteMoeHybridForCausalLM,
        GraniteMoeHybridForSequenceClassification,
        modeling.GraniteMoeHybridRotaryEmbedding,  # positions -> cos, sin: no relevance path
        modeling.GraniteMoeHybridMoE,  # route, then the experts: nothing non-linear of its own
        modeling.GraniteMoeHybridTopKRouter,  # feeds only the indices and the held-constant weights
    ),
    rules={
        modeling.GraniteMoeHybridDecoderLayer: OwnForwardRule(),
        modeling.GraniteMoeHybridAttention: AttentionRule(),
        modeling.GraniteMoeHybridMLP: GatedMLPRule(
            gate_up_proj="input_linear", down_proj="output_linear", act="activation"
        ),
        modeling.GraniteMoeHybridExperts: ExpertsRule(),
        SiLUActivation: SiLUIdentityRule,
    },
    causal_lm=modeling.GraniteMoeHybridForCausalLM,
    classifier=GraniteMoeHybridForSequenceClassification,
    canonizable=False,
)
