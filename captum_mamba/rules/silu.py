"""SiLU identity rule (MambaLRP, Eq. 4): ``silu(x) = x * [sigmoid(x)]const``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from captum_mamba.rules.base import MambaLRPRule


class SiLUIdentityRule(MambaLRPRule):
    r"""
    Propagates relevance through SiLU unchanged: ``R_in = R_out`` element-wise.

    SiLU is written as ``x * sigmoid(x)`` with the sigmoid detached, so the activation acts as a
    locally linear gate and conserves relevance. Used for both SiLUs of a Mamba block (after the
    causal convolution and on the gate branch) and for ``nn.SiLU`` leaf modules.
    """

    replaces_forward = True

    def apply(self, x: Tensor) -> Tensor:
        r"""
        Args:
            x (Tensor): pre-activation.

        Returns:
            *Tensor* equal to ``silu(x)`` whose gradient is ``sigmoid(x)``, i.e. the gradient of
            ``x * [sigmoid(x)]const`` (one fused kernel forward and backward).
        """
        return _SiLUWithFrozenSigmoid.apply(x)

    def module_forward(self, module: nn.Module, x: Tensor) -> Tensor:  # type: ignore[override]
        """An ``nn.SiLU`` (or Hugging Face ``SiLUActivation``) module under the rule."""
        return self.apply(x)


class _SiLUWithFrozenSigmoid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.nn.functional.silu(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x)
