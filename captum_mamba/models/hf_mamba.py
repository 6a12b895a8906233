"""Hugging Face ``transformers`` Mamba (Mamba-1): the mixer rule and the registry entries."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from transformers.activations import SiLUActivation
from transformers.models.mamba import modeling_mamba

from captum_mamba.kernels.cuda import load_causal_conv1d_fn, use_kernel
from captum_mamba.kernels.fused_mixer import fusable, fused_mixer
from captum_mamba.models.hf_common import (
    CausalLMHeadRule,
    MixerRule,
    causal_conv,
    check_cache,
    check_padding,
    mask_padding,
    widened,
)
from captum_mamba.options import current_options
from captum_mamba.registry import DEFAULT_REGISTRY
from captum_mamba.rules.base import MambaLRPRule
from captum_mamba.rules.gate import GateHalfRule
from captum_mamba.rules.linear import GradientRule
from captum_mamba.rules.norm import RMSNormRule
from captum_mamba.rules.silu import SiLUIdentityRule
from captum_mamba.rules.ssm import SelectiveSSMRule


class MambaMixerRule(MixerRule):
    r"""
    MambaLRP for a Mamba-1 mixer (Hugging Face ``MambaMixer``).

    The block computes ``out_proj(gate(SSM(silu(conv(in_proj_x))), silu(in_proj_z)))``; each
    non-linear piece gets its component rule. A component set to ``None`` runs without its rule
    (plain gradient), which is how ablations switch rules off.

    Args:
        silu (SiLUIdentityRule, optional): rule for both SiLUs. Default: ``SiLUIdentityRule()``
        ssm (SelectiveSSMRule, optional): rule for the selective scan. Default: ``SelectiveSSMRule()``
        gate (GateHalfRule, optional): rule for ``y * silu(z)``. Default: ``GateHalfRule()``
        fused (bool, optional): on the CUDA kernels, with all three rules and float32 inputs,
                    run the mixer as one autograd node (:mod:`captum_mamba.kernels.fused_mixer`;
                    same relevances, fewer kernel launches). Default: True
    """

    def __init__(
        self,
        silu: SiLUIdentityRule | None = SiLUIdentityRule(),
        ssm: SelectiveSSMRule | None = SelectiveSSMRule(),
        gate: GateHalfRule | None = GateHalfRule(),
        fused: bool = True,
    ) -> None:
        super().__init__(silu, ssm, gate)
        self.fused = fused

    def sizes(self, mixer: nn.Module) -> tuple[int, int]:
        """The mixer's ``dt`` rank and state size (Hugging Face names)."""
        return mixer.time_step_rank, mixer.ssm_state_size

    def selection(self, mixer: nn.Module, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The input-dependent ``dt`` (before ``dt_proj``), ``B`` and ``C``; all end up held constant."""
        rank, state = self.sizes(mixer)
        dt, B, C = torch.split(mixer.x_proj(u), [rank, state, state], dim=-1)
        return dt, B, C

    def mix(
        self, mixer: nn.Module, hidden_states: Tensor, attention_mask: Tensor | None = None, cache_params: Any = None
    ) -> Tensor:
        r"""
        The mixer's computation with the rules, shared by the module layouts that use it.

        Args:
            mixer (nn.Module): a Mamba-1 mixer (``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``,
                        ``A_log``, ``D``, ``out_proj``).
            hidden_states (Tensor): ``(batch, length, hidden)``.
            attention_mask (Tensor, optional): 1 for real tokens.
            cache_params (optional): a Hugging Face cache being filled (prefill only).

        Returns:
            *Tensor* ``(batch, length, hidden)``.
        """
        if self._fuses(mixer, hidden_states, attention_mask, cache_params):
            return fused_mixer(mixer, hidden_states, *self.sizes(mixer))
        dtype = hidden_states.dtype
        check_cache(cache_params, mixer.layer_idx)
        check_padding(attention_mask, mixer.in_proj)
        x, z = mixer.in_proj(mask_padding(hidden_states, attention_mask)).chunk(2, dim=-1)
        u = mask_padding(self._silu(causal_conv(mixer, x, cache_params)), attention_mask)
        dt, B, C = self.selection(mixer, u)
        # The model's own precision for its SSM parameters (float32, also in half-precision models).
        # computed channel-major, the layout the CUDA scan takes without a copy
        delta = F.softplus(mixer.dt_proj.weight @ dt.transpose(1, 2) + mixer.dt_proj.bias.float()[:, None])
        delta = delta.transpose(1, 2)
        A = -torch.exp(mixer.A_log.float())
        y, last_state = self._scan(u, delta, A, B, C, mixer.D.float())
        if cache_params is not None:
            cache_params.update_recurrent_state(last_state.to(dtype), mixer.layer_idx)
        return mixer.out_proj(self._gate(y, self._silu(z)).to(dtype))

    def _fuses(self, mixer: nn.Module, hidden_states: Tensor, attention_mask: Tensor | None, cache_params: Any) -> bool:
        """Whether :func:`fused_mixer` computes exactly this rule: the default components, no mask or cache."""
        return (
            self.fused
            and attention_mask is None
            and cache_params is None
            and type(self).selection is MambaMixerRule.selection
            and type(self.silu) is SiLUIdentityRule
            and type(self.gate) is GateHalfRule
            and type(self.ssm) is SelectiveSSMRule
            and getattr(mixer.x_proj, "bias", None) is None
            and self.ssm._use_cuda(hidden_states)
            and use_kernel(hidden_states, load_causal_conv1d_fn, current_options().backend)
            and fusable(mixer, hidden_states)
        )


class MambaBlockRule(MambaLRPRule):
    r"""
    The residual block ``x + mixer(norm(x))``: relevance splits over the sum as the gradient says
    (LRP-0); the norm and the mixer get their own rules.

    Hugging Face's block casts the residual to ``float32`` when ``residual_in_fp32`` is set, which
    narrows ``float64`` models; here the residual is widened to at least ``float32`` and never
    narrowed, so explanations in ``float64`` conserve relevance to ``float64`` precision. With the
    ``checkpoint_blocks`` option (memory-lean mode) the block is recomputed in the backward pass.
    """

    replaces_forward = True

    def module_forward(  # type: ignore[override]
        self,
        block: modeling_mamba.MambaBlock,
        hidden_states: Tensor,
        cache_params: Any = None,
        attention_mask: Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor:
        if current_options().checkpoint_blocks and torch.is_grad_enabled():
            return checkpoint(self._block, block, hidden_states, cache_params, attention_mask, use_reentrant=False)
        return self._block(block, hidden_states, cache_params, attention_mask)

    @staticmethod
    def _block(block: nn.Module, hidden_states: Tensor, cache_params: Any, attention_mask: Tensor | None) -> Tensor:
        residual = hidden_states
        if block.residual_in_fp32:
            residual = widened(residual)
        normed = block.norm(hidden_states.to(dtype=block.norm.weight.dtype))
        return residual + block.mixer(normed, cache_params=cache_params, attention_mask=attention_mask)


DEFAULT_REGISTRY.register(modeling_mamba.MambaBlock, MambaBlockRule)
DEFAULT_REGISTRY.register(modeling_mamba.MambaMixer, MambaMixerRule)
DEFAULT_REGISTRY.register(modeling_mamba.MambaRMSNorm, RMSNormRule)
DEFAULT_REGISTRY.register(SiLUActivation, SiLUIdentityRule)
DEFAULT_REGISTRY.register(modeling_mamba.MambaModel, GradientRule)
DEFAULT_REGISTRY.register(modeling_mamba.MambaForCausalLM, CausalLMHeadRule(modeling_mamba.MambaCausalLMOutput))
