"""Differentiate Hugging Face Mamba-1 models in linear time, for the gradient-based baselines."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from torch import nn
from transformers.models.mamba.modeling_mamba import MambaMixer, MambaRMSNorm

from captum_mamba.rule_context import mamba_lrp_rules
from captum_mamba.rules.mixer import MixerRule


def linear_time_forward(model: nn.Module) -> AbstractContextManager:
    r"""
    Run a Hugging Face Mamba model through the package's linear-time differentiable scan, with
    every MambaLRP rule switched off: the same function and gradients as the model's own forward
    (up to rounding), but a backward that is linear in the sequence length instead of quadratic
    (Hugging Face's CPU reference path). Models with other mixers (Mamba2, FalconMamba,
    mamba-ssm), whose own paths are not quadratic, run unchanged.

    Args:
        model (nn.Module): the model.

    Returns:
        A context manager (``with linear_time_forward(model): ...``).
    """
    mixers = [
        type(m) for m in model.modules() if type(m).__name__.endswith("Mixer") or "mamba_ssm" in type(m).__module__
    ]
    if not mixers or any(m is not MambaMixer for m in mixers):
        return nullcontext()
    return mamba_lrp_rules(model, {MambaMixer: MixerRule(silu=None, ssm=None, gate=None), MambaRMSNorm: None})
