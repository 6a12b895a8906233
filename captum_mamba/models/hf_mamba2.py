"""Hugging Face ``transformers`` Mamba2 (SSD): the mixer rule and the registry entries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.models.mamba2 import modeling_mamba2

from captum_mamba.models.hf_common import (
    CausalLMHeadRule,
    MixerRule,
    causal_conv,
    check_cache,
    check_padding,
    mask_padding,
)
from captum_mamba.models.hf_mamba import MambaBlockRule
from captum_mamba.registry import DEFAULT_REGISTRY
from captum_mamba.rules.linear import GradientRule
from captum_mamba.rules.norm import GatedRMSNormRule, RMSNormRule


@dataclass(frozen=True)
class Mamba2Layout:
    """Sizes of a Mamba2 mixer, whatever its implementation calls them."""

    mlp: int  # width of the optional gated-MLP part of in_proj (mamba-ssm's d_mlp; 0 in Hugging Face)
    ssm: int  # width of the SSM part (heads x head_dim)
    heads: int
    head_dim: int
    groups: int
    state: int
    time_step_limit: tuple[float, float]
    chunk_size: int


class Mamba2MixerRule(MixerRule):
    r"""
    MambaLRP for a Mamba2 mixer (Hugging Face ``Mamba2Mixer``).

    ``in_proj`` gives the gate ``z``, the ``x|B|C`` stream and ``dt``; the stream goes through the
    depthwise causal conv and a SiLU (SiLU rule); ``x`` carries relevance into the SSD scan, while
    ``B``, ``C``, ``dt`` (after bias, softplus and clamp) and the per-head decays are held
    constant (SSM rule; the ``D`` skip is kept). The gated group norm ``norm(y * silu(z))`` is the
    mixer's ``norm`` module, which gets its own rule from the registry
    (:class:`~captum_mamba.rules.GatedRMSNormRule`: gate rule, SiLU rule, normaliser held
    constant), then ``out_proj``. A mixer without that norm applies the gate rule here.

    Args:
        silu (SiLUIdentityRule, optional): rule for the SiLUs.
        ssm (SelectiveSSMRule, optional): rule for the scan.
        gate (GateHalfRule, optional): rule for gates applied by the mixer itself.
    """

    def layout(self, mixer: nn.Module) -> Mamba2Layout:
        """The mixer's sizes (Hugging Face names)."""
        return Mamba2Layout(
            mlp=0,
            ssm=mixer.intermediate_size,
            heads=mixer.num_heads,
            head_dim=mixer.head_dim,
            groups=mixer.n_groups,
            state=mixer.ssm_state_size,
            time_step_limit=tuple(mixer.time_step_limit),
            chunk_size=mixer.chunk_size,
        )

    def mix(
        self, mixer: nn.Module, hidden_states: Tensor, attention_mask: Tensor | None = None, cache_params: Any = None
    ) -> Tensor:
        r"""
        The mixer's computation with the rules, shared by the module layouts that use it.

        Args:
            mixer (nn.Module): a Mamba2 mixer (``in_proj``, ``conv1d``, ``dt_bias``, ``A_log``,
                        ``D``, optional gated ``norm``, ``out_proj``).
            hidden_states (Tensor): ``(batch, length, hidden)``.
            attention_mask (Tensor, optional): 1 for real tokens.
            cache_params (optional): a Hugging Face cache being filled (prefill only).

        Returns:
            *Tensor* ``(batch, length, hidden)``.
        """
        batch, length, _ = hidden_states.shape
        dtype = hidden_states.dtype
        sizes = self.layout(mixer)
        check_cache(cache_params, mixer.layer_idx)
        check_padding(attention_mask, mixer.in_proj)
        projected = mixer.in_proj(mask_padding(hidden_states, attention_mask))
        state_width = sizes.groups * sizes.state
        z0, x0, gate, xBC, dt = projected.split(
            [sizes.mlp, sizes.mlp, sizes.ssm, sizes.ssm + 2 * state_width, sizes.heads], dim=-1
        )
        xBC = mask_padding(self._silu(causal_conv(mixer, xBC, cache_params)), attention_mask)
        x, B, C = torch.split(xBC, [sizes.ssm, state_width, state_width], dim=-1)

        low, high = sizes.time_step_limit
        delta = torch.clamp(F.softplus(dt + mixer.dt_bias.to(dt.dtype)), min=low, max=high)
        A = -torch.exp(mixer.A_log.float())
        heads_x = x.reshape(batch, length, sizes.heads, sizes.head_dim)
        y, last_state = self._scan_heads(
            heads_x,
            delta,
            A,
            B.reshape(batch, length, sizes.groups, sizes.state),
            C.reshape(batch, length, sizes.groups, sizes.state),
            None,
            chunk_size=sizes.chunk_size,
        )
        skip = mixer.D.float().reshape(sizes.heads, -1)  # (heads, 1), or (heads, head_dim) per channel
        y = (y + heads_x * skip).reshape(batch, length, sizes.ssm)
        if cache_params is not None:
            cache_params.update_recurrent_state(last_state.to(dtype), layer_idx=mixer.layer_idx)
        if getattr(mixer, "norm", None) is not None and getattr(mixer, "rmsnorm", True):
            y = mixer.norm(y, gate)
        else:
            y = self._gate(y, self._silu(gate.to(y.dtype)))
        if sizes.mlp:
            y = torch.cat([self._gate(x0, self._silu(z0)), y.to(dtype)], dim=-1)
        return mixer.out_proj(y.to(dtype))


DEFAULT_REGISTRY.register(modeling_mamba2.Mamba2Mixer, Mamba2MixerRule)
DEFAULT_REGISTRY.register(modeling_mamba2.MambaRMSNormGated, GatedRMSNormRule)
DEFAULT_REGISTRY.register(modeling_mamba2.Mamba2RMSNorm, RMSNormRule)
DEFAULT_REGISTRY.register(modeling_mamba2.Mamba2Block, MambaBlockRule)
DEFAULT_REGISTRY.register(modeling_mamba2.Mamba2Model, GradientRule)
DEFAULT_REGISTRY.register(modeling_mamba2.Mamba2ForCausalLM, CausalLMHeadRule(modeling_mamba2.Mamba2CausalLMOutput))
