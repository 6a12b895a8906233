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
"""

from __future__ import annotations

from torch import Tensor, nn
from transformers.activations import SiLUActivation
from transformers.models.falcon_h1 import modeling_falcon_h1

from captum_mamba.families.declaration import ModelFamily
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
    canonizable=False,
)
