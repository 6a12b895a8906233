"""Multiplicative gate rule (MambaLRP, Eq. 9): ``0.5 * a * b + 0.5 * [a * b]const``."""

from __future__ import annotations

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
        product = a * b
        return 0.5 * product + 0.5 * product.detach()
