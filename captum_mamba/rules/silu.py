"""SiLU identity rule (MambaLRP, Eq. 4): ``silu(x) = x * [sigmoid(x)]const``."""

from __future__ import annotations

from collections.abc import Callable

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

    def apply_recomputed(self, linear: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        r"""
        ``silu(linear(x))`` under the rule, keeping only ``x`` for the backward pass: ``linear(x)``
        is recomputed there (a depthwise convolution costs less to run again than its output costs
        to keep; ``x`` is often a view of a projection kept anyway).

        Args:
            linear (Callable): a map linear in ``x`` with frozen parameters (the causal convolution).
            x (Tensor): its input.

        Returns:
            *Tensor* equal to ``silu(linear(x))`` whose gradient is ``linearᵀ (sigmoid(linear(x)) ·)``.
        """
        return _SiLUOfRecomputed.apply(x, linear)

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


class _SiLUOfRecomputed(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, linear: Callable[[Tensor], Tensor]) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.linear = linear
        return torch.nn.functional.silu(linear(x))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            leaf = x.detach().requires_grad_()
            pre_activation = ctx.linear(leaf)
            (grad_x,) = torch.autograd.grad(pre_activation, leaf, grad * torch.sigmoid(pre_activation.detach()))
        return grad_x, None
