"""mamba-ssm (``state-spaces/mamba``) modules: rules for ``Mamba``, ``Mamba2``, ``Block``, ``MixerModel``, norms.

Imported by :mod:`captum_mamba.models` only when ``mamba_ssm`` imports (the ``gpu`` extra); the
rules reuse the Hugging Face adapters' computations under mamba-ssm's attribute names, and run
the model's fused paths (``mamba_inner_fn``, fused add+norm) as separate, rule-applying steps.
"""

from __future__ import annotations

from typing import Any

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
from torch.utils.checkpoint import checkpoint

from captum_mamba.models.hf_common import widened
from captum_mamba.models.hf_mamba import MambaMixerRule
from captum_mamba.models.hf_mamba2 import Mamba2Layout, Mamba2MixerRule
from captum_mamba.options import current_options
from captum_mamba.registry import DEFAULT_REGISTRY
from captum_mamba.rules.base import MambaLRPRule
from captum_mamba.rules.gate import GateHalfRule
from captum_mamba.rules.linear import GradientRule
from captum_mamba.rules.norm import GatedRMSNormRule, RMSNormRule
from captum_mamba.rules.silu import SiLUIdentityRule


def _no_decoding_steps(inference_params: Any) -> None:
    if inference_params is not None and getattr(inference_params, "seqlen_offset", 0) > 0:
        raise NotImplementedError("MambaLRP explains whole sequences, not single decoding steps")


class SsmMambaRule(MambaMixerRule):
    """The Mamba-1 mixer rule for ``mamba_ssm.modules.mamba_simple.Mamba`` (fast path bypassed)."""

    def sizes(self, mixer: nn.Module) -> tuple[int, int]:
        return mixer.dt_rank, mixer.d_state

    def module_forward(  # type: ignore[override]
        self, mixer: Mamba, hidden_states: Tensor, inference_params: Any = None, **kwargs: Any
    ) -> Tensor:
        _no_decoding_steps(inference_params)
        return self.mix(mixer, hidden_states)


class SsmMamba2Rule(Mamba2MixerRule):
    """The Mamba2 mixer rule for ``mamba_ssm.modules.mamba2.Mamba2`` (mem-efficient path bypassed)."""

    def layout(self, mixer: nn.Module) -> Mamba2Layout:
        in_width = mixer.in_proj.out_features
        state_width = mixer.ngroups * mixer.d_state
        return Mamba2Layout(
            mlp=(in_width - 2 * mixer.d_ssm - 2 * state_width - mixer.nheads) // 2,
            ssm=mixer.d_ssm,
            heads=mixer.nheads,
            head_dim=mixer.headdim,
            groups=mixer.ngroups,
            state=mixer.d_state,
            time_step_limit=tuple(mixer.dt_limit),
            chunk_size=mixer.chunk_size,
        )

    def module_forward(  # type: ignore[override]
        self, mixer: Mamba2, u: Tensor, seqlen: int | None = None, seq_idx: Any = None,
        cu_seqlens: Any = None, inference_params: Any = None, **kwargs: Any,
    ) -> Tensor:  # fmt: skip
        _no_decoding_steps(inference_params)
        if seqlen is not None or seq_idx is not None or cu_seqlens is not None:
            raise NotImplementedError("MambaLRP supports (batch, length, hidden) inputs, not packed sequences")
        return self.mix(mixer, u)


class SsmGatedRMSNormRule(GatedRMSNormRule):
    """mamba-ssm's gated ``RMSNorm(x, z)``: gate then norm (``norm_before_gate=False``, as Mamba2 uses)."""

    def module_forward(self, module: nn.Module, hidden_states: Tensor, z: Tensor | None = None) -> Tensor:  # type: ignore[override]
        if z is not None and module.norm_before_gate:
            raise NotImplementedError("MambaLRP supports mamba-ssm's gated RMSNorm with norm_before_gate=False")
        return super().module_forward(module, hidden_states, z)


class FusedAddRMSNormRule(RMSNormRule):
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
        return normed, widened(summed) if residual_in_fp32 else summed


def _add_norm(norm: nn.Module, hidden: Tensor, residual: Tensor | None, in_fp32: bool) -> tuple[Tensor, Tensor]:
    residual = hidden if residual is None else hidden + residual
    normed = norm(residual.to(dtype=norm.weight.dtype))
    return normed, widened(residual) if in_fp32 else residual


class SsmBlockRule(MambaLRPRule):
    r"""
    mamba-ssm's ``Block``: add, norm, mixer (and norm2, MLP), returning ``(hidden, residual)``.
    The fused add+norm kernel is replaced by the add (LRP-0) and the norm module (its rule).
    With the ``checkpoint_blocks`` option the block is recomputed in the backward pass.
    """

    replaces_forward = True

    def module_forward(  # type: ignore[override]
        self, block: Block, hidden_states: Tensor, residual: Tensor | None = None, inference_params: Any = None,
        **mixer_kwargs: Any,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        if current_options().checkpoint_blocks and torch.is_grad_enabled():
            return checkpoint(self._block, block, hidden_states, residual, inference_params, use_reentrant=False)
        return self._block(block, hidden_states, residual, inference_params)

    @staticmethod
    def _block(block: Block, hidden: Tensor, residual: Tensor | None, inference_params: Any) -> tuple[Tensor, Tensor]:
        normed, residual = _add_norm(block.norm, hidden, residual, block.residual_in_fp32)
        hidden = block.mixer(normed, inference_params=inference_params)
        if block.mlp is not None:
            normed, residual = _add_norm(block.norm2, hidden, residual, block.residual_in_fp32)
            hidden = block.mlp(normed)
        return hidden, residual


class MixerModelRule(MambaLRPRule):
    """mamba-ssm's ``MixerModel``: embedding, blocks, final add and norm (through the norm module)."""

    replaces_forward = True

    def module_forward(  # type: ignore[override]
        self, model: MixerModel, input_ids: Tensor, inference_params: Any = None, **mixer_kwargs: Any
    ) -> Tensor:
        hidden = model.embedding(input_ids)
        residual = None
        for layer in model.layers:
            hidden, residual = layer(hidden, residual, inference_params=inference_params)
        return _add_norm(model.norm_f, hidden, residual, model.residual_in_fp32)[0]


class GatedMLPRule(MambaLRPRule):
    """mamba-ssm's ``GatedMLP``: ``fc2(y * silu(gate))`` with the gate and SiLU rules."""

    replaces_forward = True

    def __init__(self, gate: GateHalfRule | None = GateHalfRule(), silu: SiLUIdentityRule | None = SiLUIdentityRule()):
        self.gate = gate
        self.silu = silu

    def module_forward(self, mlp: GatedMLP, x: Tensor) -> Tensor:  # type: ignore[override]
        if mlp.activation is not F.silu:
            raise NotImplementedError("GatedMLPRule supports the SiLU activation")
        y, gate = mlp.fc1(x).chunk(2, dim=-1)
        activated = F.silu(gate) if self.silu is None else self.silu.apply(gate)
        return mlp.fc2(y * activated if self.gate is None else self.gate.apply(y, activated))


DEFAULT_REGISTRY.register(Mamba, SsmMambaRule)
DEFAULT_REGISTRY.register(Mamba2, SsmMamba2Rule)
DEFAULT_REGISTRY.register(Block, SsmBlockRule)
DEFAULT_REGISTRY.register(MixerModel, MixerModelRule)
DEFAULT_REGISTRY.register(FusedRMSNorm, FusedAddRMSNormRule)
DEFAULT_REGISTRY.register(GatedRMSNorm, SsmGatedRMSNormRule)
DEFAULT_REGISTRY.register(GatedMLP, GatedMLPRule)
DEFAULT_REGISTRY.register(MambaLMHeadModel, GradientRule)
