"""mamba-ssm (``state-spaces/mamba``): ``MambaLMHeadModel`` with ``Mamba`` / ``Mamba2`` mixers.

Imported only when ``mamba_ssm`` imports (the ``gpu`` extra). Its fast paths (``mamba_inner_fn``,
the fused add+norm kernel) are bypassed: the mixers run the package's mixer functions, and the
blocks run their own forward with ``fused_add_norm`` off, so that the norm modules (and their
rules) are called.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel, MixerModel
from mamba_ssm.modules.block import Block
from mamba_ssm.modules.mamba2 import Mamba2
from mamba_ssm.modules.mamba_simple import Mamba
from mamba_ssm.modules.mlp import GatedMLP
from mamba_ssm.ops.triton.layer_norm import RMSNorm as FusedRMSNorm
from mamba_ssm.ops.triton.layernorm_gated import RMSNorm as GatedRMSNorm
from torch import Tensor, nn

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.mixers.layouts import Mamba1Layout, Mamba2Layout, Mamba2Sizes
from captum_mamba.rules.base import MambaLRPRule
from captum_mamba.rules.block import BlockRule, OwnForwardRule
from captum_mamba.rules.gate import GateHalfRule
from captum_mamba.rules.norm import GatedRMSNormRule, RMSNormRule
from captum_mamba.rules.silu import SiLUIdentityRule


class SsmMamba1Layout(Mamba1Layout):
    """mamba-ssm's ``Mamba`` (``dt_rank``, ``d_state``)."""

    def sizes(self, mixer: nn.Module) -> tuple[int, int]:
        return mixer.dt_rank, mixer.d_state


class SsmMamba2Layout(Mamba2Layout):
    """mamba-ssm's ``Mamba2`` (``d_ssm``, ``nheads``, ``ngroups``, an optional gated-MLP part)."""

    def sizes(self, mixer: nn.Module) -> Mamba2Sizes:
        in_width = mixer.in_proj.out_features
        state_width = mixer.ngroups * mixer.d_state
        return Mamba2Sizes(
            mlp=(in_width - 2 * mixer.d_ssm - 2 * state_width - mixer.nheads) // 2,
            ssm=mixer.d_ssm,
            heads=mixer.nheads,
            head_dim=mixer.headdim,
            groups=mixer.ngroups,
            state=mixer.d_state,
            time_step_limit=tuple(mixer.dt_limit),
            chunk_size=mixer.chunk_size,
        )


class GateFirstRMSNormRule(GatedRMSNormRule):
    """mamba-ssm's gated ``RMSNorm(x, z)``: gate then norm (``norm_before_gate=False``, as Mamba2 uses)."""

    def module_forward(self, module: nn.Module, hidden_states: Tensor, z: Tensor | None = None) -> Tensor:  # type: ignore[override]
        if z is not None and module.norm_before_gate:
            raise NotImplementedError("MambaLRP supports mamba-ssm's gated RMSNorm with norm_before_gate=False")
        return super().module_forward(module, hidden_states, z)


class AddThenRMSNormRule(RMSNormRule):
    r"""
    mamba-ssm's ``RMSNorm(x, residual, prenorm, residual_in_fp32)``: the residual add (LRP-0) and
    the norm with its normaliser held constant, as separate steps.
    """

    def module_forward(  # type: ignore[override]
        self, module: nn.Module, x: Tensor, residual: Tensor | None = None, prenorm: bool = False,
        residual_in_fp32: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:  # fmt: skip
        summed = x if residual is None else x + residual
        normed = self.apply(summed, module.weight, module.eps)
        if not prenorm:
            return normed
        return normed, summed.to(torch.promote_types(summed.dtype, torch.float32)) if residual_in_fp32 else summed


class GatedMLPRule(MambaLRPRule):
    """mamba-ssm's ``GatedMLP``: ``fc2(y * silu(gate))`` with the gate and SiLU rules."""

    replaces_forward = True
    components = {"gate": "gate", "silu": "silu"}

    def __init__(self, gate: GateHalfRule | None = GateHalfRule(), silu: SiLUIdentityRule | None = SiLUIdentityRule()):
        self.gate = gate
        self.silu = silu

    def module_forward(self, mlp: GatedMLP, x: Tensor) -> Tensor:  # type: ignore[override]
        if mlp.activation is not F.silu:
            raise NotImplementedError("GatedMLPRule supports the SiLU activation")
        y, gate = mlp.fc1(x).chunk(2, dim=-1)
        activated = F.silu(gate) if self.silu is None else self.silu.apply(gate)
        return mlp.fc2(y * activated if self.gate is None else self.gate.apply(y, activated))


MAMBA_SSM = ModelFamily(
    name="mamba_ssm",
    mixers={Mamba: SsmMamba1Layout(), Mamba2: SsmMamba2Layout()},
    norms={FusedRMSNorm: AddThenRMSNormRule, GatedRMSNorm: GateFirstRMSNormRule},
    blocks={Block: BlockRule(overrides={"fused_add_norm": False})},
    containers=(MambaLMHeadModel,),
    rules={MixerModel: OwnForwardRule(overrides={"fused_add_norm": False}), GatedMLP: GatedMLPRule},
    causal_lm=MambaLMHeadModel,
    canonizable=False,
)
