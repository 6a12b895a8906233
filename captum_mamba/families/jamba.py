"""Hugging Face Jamba (AI21): Mamba-1 mixers with RMSNorms on dt, B, C, a few attention layers, MoE feed-forwards.

Every layer is ``h + mixer(norm(h))`` (a Mamba-1 mixer or attention without positional
embeddings), then ``h + ffn(norm(h))`` with a SwiGLU MLP or, in every ``expert_layer_period``-th
layer, a sparse mixture of SwiGLU experts. The mixer's norms on ``dt``, ``B`` and ``C`` have
weights (FalconMamba's have none) but sit on the same held-constant selection path, read by the
same layout; they are ``JambaRMSNorm`` modules like the residual stream's, so they get the
RMSNorm rule, whose gradient the SSM rule discards.
"""

from __future__ import annotations

from transformers.activations import SiLUActivation
from transformers.models.jamba import modeling_jamba

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.mixers.layouts import NormalisedSelectionLayout
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.block import OwnForwardRule
from captum_mamba.rules.mlp import GatedMLPRule
from captum_mamba.rules.moe import ExpertsRule
from captum_mamba.rules.norm import RMSNormRule
from captum_mamba.rules.silu import SiLUIdentityRule

# Newer releases (5.24) route with a JambaTopKRouter module (logits, softmax, top-k); older ones (5.17)
# with an nn.Linear, the block computing the top-k itself. Either way the router's output reaches the
# experts only as the indices and the routing weights, which the experts rule holds constant.
_ROUTERS = tuple(router for router in (getattr(modeling_jamba, "JambaTopKRouter", None),) if router is not None)

JAMBA = ModelFamily(
    name="jamba",
    mixers={modeling_jamba.JambaMambaMixer: NormalisedSelectionLayout()},
    norms={modeling_jamba.JambaRMSNorm: RMSNormRule},
    containers=(
        modeling_jamba.JambaModel,
        modeling_jamba.JambaForCausalLM,
        modeling_jamba.JambaSparseMoeBlock,  # route, then the experts: nothing non-linear of its own
        *_ROUTERS,
    ),
    rules={
        modeling_jamba.JambaAttentionDecoderLayer: OwnForwardRule(),
        modeling_jamba.JambaMambaDecoderLayer: OwnForwardRule(),
        modeling_jamba.JambaAttention: AttentionRule(),
        modeling_jamba.JambaMLP: GatedMLPRule(),
        modeling_jamba.JambaExperts: ExpertsRule(),
        SiLUActivation: SiLUIdentityRule,
    },
    causal_lm=modeling_jamba.JambaForCausalLM,
    canonizable=False,
)
