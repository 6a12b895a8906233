"""Hugging Face ``transformers`` FalconMamba: the Mamba-1 rules plus the norms on ``dt``, ``B``, ``C``."""

from __future__ import annotations

from torch import Tensor, nn
from transformers.models.falcon_mamba import modeling_falcon_mamba

from captum_mamba.models.hf_common import CausalLMHeadRule
from captum_mamba.models.hf_mamba import MambaBlockRule, MambaMixerRule
from captum_mamba.registry import DEFAULT_REGISTRY
from captum_mamba.rules.linear import GradientRule
from captum_mamba.rules.norm import RMSNormRule


class FalconMambaMixerRule(MambaMixerRule):
    r"""
    MambaLRP for a FalconMamba mixer: the Mamba-1 mixer rule, with FalconMamba's weightless
    RMSNorms applied to ``dt``, ``B`` and ``C``. Those sit on the held-constant path of the SSM
    rule, so they are run as the model runs them and carry no relevance.
    """

    def selection(self, mixer: nn.Module, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        dt, B, C = super().selection(mixer, u)
        if hasattr(mixer, "b_layernorm"):
            return mixer.dt_layernorm(dt), mixer.b_layernorm(B), mixer.c_layernorm(C)
        rms = modeling_falcon_mamba.rms_forward  # older transformers: a function, not modules
        return tuple(rms(t, variance_epsilon=mixer.rms_eps) for t in (dt, B, C))  # type: ignore[return-value]


DEFAULT_REGISTRY.register(modeling_falcon_mamba.FalconMambaMixer, FalconMambaMixerRule)
if hasattr(modeling_falcon_mamba, "FalconMambaWeightlessRMSNorm"):
    DEFAULT_REGISTRY.register(modeling_falcon_mamba.FalconMambaWeightlessRMSNorm, GradientRule)
DEFAULT_REGISTRY.register(modeling_falcon_mamba.FalconMambaRMSNorm, RMSNormRule)
DEFAULT_REGISTRY.register(modeling_falcon_mamba.FalconMambaBlock, MambaBlockRule)
DEFAULT_REGISTRY.register(modeling_falcon_mamba.FalconMambaModel, GradientRule)
DEFAULT_REGISTRY.register(
    modeling_falcon_mamba.FalconMambaForCausalLM, CausalLMHeadRule(modeling_falcon_mamba.FalconMambaCausalLMOutput)
)
