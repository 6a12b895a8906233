"""Normalisation rules (MambaLRP, App. C): the normaliser is held constant."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_mamba.rules.base import MambaLRPRule


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _epsilon_of(module: nn.Module) -> float:
    for name in ("variance_epsilon", "eps", "epsilon"):
        if hasattr(module, name):
            return float(getattr(module, name))
    raise AttributeError(f"{type(module).__name__} has no epsilon attribute (variance_epsilon, eps)")


class RMSNormRule(MambaLRPRule):
    r"""
    ``x / [rms(x)]const * w``: with the root mean square detached the norm is a diagonal
    linear map, so relevance passes element-wise (``R_in = R_out``).

    Works for RMSNorm modules with a ``weight`` (or none) and an epsilon attribute named
    ``variance_epsilon``, ``eps`` or ``epsilon`` (Hugging Face and mamba-ssm conventions). Computes
    in ``float32`` or wider, like the models do, but never narrows a ``float64`` input.
    """

    replaces_forward = True

    def apply(self, x: Tensor, weight: Tensor | None, eps: float) -> Tensor:
        r"""
        Args:
            x (Tensor): input, normalised over the last dimension.
            weight (Tensor, optional): element-wise scale.
            eps (float): added to the mean square.

        Returns:
            *Tensor* equal to ``rmsnorm(x)`` in ``x``'s dtype.
        """
        wide = x.to(_compute_dtype(x))
        inverse_rms = torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + eps).detach()
        normed = (wide * inverse_rms).to(x.dtype)
        return normed if weight is None else weight * normed

    def module_forward(self, module: nn.Module, x: Tensor) -> Tensor:  # type: ignore[override]
        return self.apply(x, getattr(module, "weight", None), _epsilon_of(module))


class LayerNormRule(MambaLRPRule):
    r"""
    ``(x - mean(x)) / [std(x)]const * w + b``: the centring stays a linear map; only the standard
    deviation is detached (Ali et al., 2022). The bias absorbs relevance (the convergence delta).
    """

    replaces_forward = True

    def apply(self, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
        r"""
        Args:
            x (Tensor): input, normalised over the last dimension.
            weight (Tensor, optional): element-wise scale.
            bias (Tensor, optional): element-wise shift.
            eps (float): added to the variance.

        Returns:
            *Tensor* equal to ``layer_norm(x)`` in ``x``'s dtype.
        """
        wide = x.to(_compute_dtype(x))
        centred = wide - wide.mean(-1, keepdim=True)
        std = torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + eps).detach()
        out = (centred / std).to(x.dtype)
        if weight is not None:
            out = out * weight
        if bias is not None:
            out = out + bias
        return out

    def module_forward(self, module: nn.Module, x: Tensor) -> Tensor:  # type: ignore[override]
        if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) != 1:
            raise ValueError("LayerNormRule supports normalisation over the last dimension only")
        return self.apply(x, getattr(module, "weight", None), getattr(module, "bias", None), _epsilon_of(module))


def plain_rms_norm(x: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    """RMSNorm with gradients through the normaliser: the computation when the rule is off."""
    wide = x.to(_compute_dtype(x))
    normed = (wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return normed if weight is None else weight * normed


def plain_layer_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    """LayerNorm with gradients through the normaliser."""
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)
