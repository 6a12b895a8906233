"""Hugging Face Nemotron-H (NVIDIA; Mamba-2 mixers, a few attention layers, squared-ReLU MLPs as layers of their own).

Each layer of the hybrid pattern (``config.layers_block_type``: ``linear_attention``,
``full_attention``, ``mlp``, ``moe``) is one residual block ``h + mixer(norm(h))`` whose
``mixer`` is a Mamba-2 mixer, an attention module (no positional embedding), a plain MLP
``down(relu(up(x))²)`` or a mixture of experts; the block's own forward picks it. The attention
module calls transformers' attention interface (AttnLRP / CP-LRP), the MLP's squared ReLU gets
the identity-style rule ``x·[relu(x)]const``.

The mixture-of-experts layers (``NemotronHMoE``: ``NemotronHTopkRouter``, ``NemotronHExperts``)
are not declared: a model with ``moe`` layers is reported as unsupported.
"""

from __future__ import annotations

from transformers.activations import ReLUSquaredActivation
from transformers.models.nemotron_h import modeling_nemotron_h

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.mixers.layouts import Mamba2Layout
from captum_mamba.rules.activation import SquaredReLUIdentityRule
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.block import OwnForwardRule
from captum_mamba.rules.mlp import MLPRule
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
    containers=(modeling_nemotron_h.NemotronHModel, modeling_nemotron_h.NemotronHForCausalLM),
    rules={
        modeling_nemotron_h.NemotronHBlock: OwnForwardRule(),
        modeling_nemotron_h.NemotronHAttention: AttentionRule(),
        modeling_nemotron_h.NemotronHMLP: MLPRule(),
        ReLUSquaredActivation: SquaredReLUIdentityRule,
    },
    causal_lm=modeling_nemotron_h.NemotronHForCausalLM,
    canonizable=False,
)
