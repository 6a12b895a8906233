"""Hugging Face Nemotron-H (NVIDIA; Mamba-2 mixers, a few attention layers, squared-ReLU MLPs and experts as layers).

Each layer of the hybrid pattern (``config.layers_block_type``: ``linear_attention``,
``full_attention``, ``mlp``, ``moe``) is one residual block ``h + mixer(norm(h))`` whose
``mixer`` is a Mamba-2 mixer, an attention module (no positional embedding), a plain MLP
``down(relu(up(x))²)`` or a mixture of experts; the block's own forward picks it. The attention
module calls transformers' attention interface (AttnLRP / CP-LRP), the MLP's squared ReLU gets
the identity-style rule ``x·[relu(x)]const``.

A mixture-of-experts layer (``NemotronHMoE``) is ``fc2(experts(fc1(x))) + shared(x)``: the router
(``NemotronHTopkRouter``: sigmoid scores in float32, a correction bias for the choice only, group-
limited top-k, renormalised and scaled weights) feeds the experts only their indices and weights,
which the experts rule holds constant; the experts (``NemotronHExperts``) are ungated squared-ReLU
MLPs under :class:`~captum_mamba.rules.moe.ExpertsRule` (their ``act_fn`` under the squared-ReLU
rule); the optional latent projections ``fc1`` / ``fc2`` are linear layers (or identities) and the
shared expert is a ``NemotronHMLP``. The wrapper adds nothing non-linear of its own: a container.
"""

from __future__ import annotations

from transformers.activations import ReLUSquaredActivation
from transformers.models.nemotron_h import modeling_nemotron_h

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.heads import NemotronHForSequenceClassification
from captum_mamba.mixers.layouts import Mamba2Layout
from captum_mamba.rules.activation import SquaredReLUIdentityRule
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.block import OwnForwardRule
from captum_mamba.rules.mlp import MLPRule
from captum_mamba.rules.moe import ExpertsRule
from captum_mamba.rules.norm import GatedRMSNormRule, RMSNormRule

# The mixer's gated group norm has its own class from transformers 5.2x on; before, the mixer
# builds Zamba2's (the same computation and attribute names).
if hasattr(modeling_nemotron_h, "NemotronHRMSNormGated"):
    _GATED_NORM = modeling_nemotron_h.NemotronHRMSNormGated
else:  # pragma: no cover - depends on the installed transformers release
    from transformers.models.zamba2.modeling_zamba2 import Zamba2RMSNormGated as _GATED_NORM

NEMOTRON_H = ModelFamily(
    name="nemotron_h",
    mixers={modeling_nemotron_h.NemotronHMamba2Mixer: Mamba2Layout()},
    norms={modeling_nemotron_h.NemotronHRMSNorm: RMSNormRule, _GATED_NORM: GatedRMSNormRule},
    containers=(
        modeling_nemotron_h.NemotronHModel,
        modeling_nemotron_h.NemotronHForCausalLM,
        NemotronHForSequenceClassification,
        modeling_nemotron_h.NemotronHMoE,  # route, latent projections, experts, + shared expert: linear around them
        modeling_nemotron_h.NemotronHTopkRouter,  # feeds only the indices and the held-constant weights
    ),
    rules={
        modeling_nemotron_h.NemotronHBlock: OwnForwardRule(),
        modeling_nemotron_h.NemotronHAttention: AttentionRule(),
        modeling_nemotron_h.NemotronHMLP: MLPRule(),  # the MLP layers and the MoE layers' shared expert
        modeling_nemotron_h.NemotronHExperts: ExpertsRule(),  # ungated (has_gate=False): down(act(up(x)))
        ReLUSquaredActivation: SquaredReLUIdentityRule,
    },
    causal_lm=modeling_nemotron_h.NemotronHForCausalLM,
    classifier=NemotronHForSequenceClassification,
    canonizable=False,
)
