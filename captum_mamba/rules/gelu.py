r"""GELU identity rule (AttnLRP's rule for element-wise activations): ``gelu(x) = x * [Φ(x)]const``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_mamba.rules.base import MambaLRPRule


class GELUIdentityRule(MambaLRPRule):
    r"""
    Propagates relevance through the exact (erf) GELU unchanged: ``R_in = R_out`` element-wise.

    ``gelu(x) = x * Φ(x)`` with the Gaussian CDF ``Φ`` held constant is a locally linear gate,
    as the SiLU rule holds the sigmoid constant (Achtibat et al., 2024: the identity rule for
    element-wise non-linearities). Used for Hugging Face's ``GELUActivation`` (Zamba's MLPs) and
    ``nn.GELU`` with ``approximate="none"``.
    """

    replaces_forward = True

    def apply(self, x: Tensor) -> Tensor:
        r"""
        Args:
            x (Tensor): pre-activation.

        Returns:
            *Tensor* equal to ``gelu(x)`` whose gradient is ``Φ(x)``, i.e. the gradient of
            ``x * [Φ(x)]const``.
        """
        return _GELUWithFrozenCDF.apply(x)

    def module_forward(self, module: nn.Module, x: Tensor) -> Tensor:  # type: ignore[override]
        """A ``GELUActivation`` or ``nn.GELU`` (exact) module under the rule."""
        if getattr(module, "approximate", "none") != "none":
            raise NotImplementedError("GELUIdentityRule covers the exact (erf) GELU, not its tanh approximation")
        return self.apply(x)


class _GELUWithFrozenCDF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return F.gelu(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))  # Φ(x)
