"""Hugging Face ``transformers`` Mamba2 (SSD): the mixer rule and the registry entries."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
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
from captum_mamba.rules.ssm import scan_heads


class Mamba2MixerRule(MixerRule):
    r"""
    MambaLRP for a Mamba2 mixer (Hugging Face ``Mamba2Mixer``).

    ``in_proj`` gives the gate ``z``, the ``x|B|C`` stream and ``dt``; the stream goes through the
    depthwise causal conv and a SiLU (SiLU rule); ``x`` carries relevance into the SSD scan, while
    ``B``, ``C``, ``dt`` (after bias, softplus and clamp) and the per-head decays are held
    constant (SSM rule; the ``D`` skip is kept). The gated group norm ``norm(y * silu(z))`` is the
    mixer's ``norm`` module, which gets its own rule from the registry
    (:class:`~captum_mamba.rules.GatedRMSNormRule`: gate rule, SiLU rule, normaliser held
    constant), then ``out_proj``.

    The ``gate`` component of this rule is unused: the gate lives in the norm module's rule.

    Args:
        silu (SiLUIdentityRule, optional): rule for the SiLU after the conv.
        ssm (SelectiveSSMRule, optional): rule for the scan.
    """

    def module_forward(  # type: ignore[override]
        self,
        mixer: modeling_mamba2.Mamba2Mixer,
        hidden_states: Tensor,
        cache_params: Any = None,
        attention_mask: Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor:
        batch, length, _ = hidden_states.shape
        dtype = hidden_states.dtype
        check_cache(cache_params, mixer.layer_idx)
        check_padding(attention_mask, mixer.in_proj)
        projected = mixer.in_proj(mask_padding(hidden_states, attention_mask))
        gate, xBC, dt = projected.split([mixer.intermediate_size, mixer.conv_dim, mixer.num_heads], dim=-1)
        xBC = mask_padding(self._silu(causal_conv(mixer, xBC, cache_params)), attention_mask)
        state_width = mixer.n_groups * mixer.ssm_state_size
        x, B, C = torch.split(xBC, [mixer.intermediate_size, state_width, state_width], dim=-1)

        low, high = mixer.time_step_limit
        delta = torch.clamp(F.softplus(dt + mixer.dt_bias.to(dt.dtype)), min=low, max=high)
        A = -torch.exp(mixer.A_log.float())
        y, last_state = scan_heads(
            self._scan_function(),
            x.reshape(batch, length, mixer.num_heads, mixer.head_dim),
            delta,
            A,
            B.reshape(batch, length, mixer.n_groups, mixer.ssm_state_size),
            C.reshape(batch, length, mixer.n_groups, mixer.ssm_state_size),
            mixer.D,
        )
        if cache_params is not None:
            cache_params.update_recurrent_state(last_state.to(dtype), layer_idx=mixer.layer_idx)
        normed = mixer.norm(y.reshape(batch, length, -1), gate)
        return mixer.out_proj(normed.to(dtype))


DEFAULT_REGISTRY.register(modeling_mamba2.Mamba2Mixer, Mamba2MixerRule)
DEFAULT_REGISTRY.register(modeling_mamba2.MambaRMSNormGated, GatedRMSNormRule)
DEFAULT_REGISTRY.register(modeling_mamba2.Mamba2RMSNorm, RMSNormRule)
DEFAULT_REGISTRY.register(modeling_mamba2.Mamba2Block, MambaBlockRule)
DEFAULT_REGISTRY.register(modeling_mamba2.Mamba2Model, GradientRule)
DEFAULT_REGISTRY.register(modeling_mamba2.Mamba2ForCausalLM, CausalLMHeadRule(modeling_mamba2.Mamba2CausalLMOutput))
