"""Multiplicative gate rule (MambaLRP, Eq. 9): ``0.5 * a * b + 0.5 * [a * b]const``."""

from __future__ import annotations

import torch
from torch import Tensor

from captum_mamba.rules.base import MambaLRPRule


class GateHalfRule(MambaLRPRule):
    r"""
    Splits the relevance of a product ``p = a * b`` of two relevance-carrying factors evenly.

    With both factors locally linear in the input, Gradient x Input gives ``2 p`` through the
    product; halving the gradient path (and keeping the value) restores conservation: each
    factor receives half of ``R_p``.
    """

    def apply(self, a: Tensor, b: Tensor) -> Tensor:
        r"""
        Args:
            a (Tensor): first factor (the SSM output ``y`` in Mamba).
            b (Tensor): second factor (``silu(z)`` in Mamba), broadcastable with ``a``.

        Returns:
            *Tensor* equal to ``a * b`` whose gradient is half that of the product.
        """
        return _HalfGradientProduct.apply(a, b)


class _HalfGradientProduct(torch.autograd.Function):
    """``a * b`` whose backward is half the product's: the value of ``0.5 p + 0.5 [p]const``, fused."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:  # type: ignore[override]
        a, b = ctx.saved_tensors
        half = 0.5 * grad
        grad_a = _unbroadcast(half * b, a.shape) if ctx.needs_input_grad[0] else None
        grad_b = _unbroadcast(half * a, b.shape) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


def _unbroadcast(grad: Tensor, shape: torch.Size) -> Tensor:
    if grad.shape == shape:
        return grad
    while grad.dim() > len(shape):
        grad = grad.sum(0)
    for dim, size in enumerate(shape):
        if size == 1 and grad.shape[dim] != 1:
            grad = grad.sum(dim, keepdim=True)
    return grad
