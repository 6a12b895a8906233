r"""Identity rule for the squared ReLU ``relu(x)²`` (Nemotron-H's MLP activation, ``ACT2FN["relu2"]``).

As for SiLU (MambaLRP Eq. 4) and in AttnLRP's identity rule for element-wise activations, the
activation is written as its input times a factor held constant:
``relu(x)² = x · [relu(x)²/x]const = x · [relu(x)]const``. Gradient x Input through it gives
``x · relu(x) · R/relu(x)² = R`` wherever the output is non-zero (and zero where the ReLU is off,
as the output is), so relevance passes element-wise and is conserved.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_mamba.rules.base import MambaLRPRule


class SquaredReLUIdentityRule(MambaLRPRule):
    r"""
    Propagates relevance through the squared ReLU unchanged: ``R_in = R_out`` element-wise.

    The forward value is ``relu(x)²``; the gradient is ``relu(x)`` (that of
    ``x · [relu(x)]const``) instead of ``2·relu(x)``, which would double the relevance. Used for
    Hugging Face's ``ReLUSquaredActivation`` modules.
    """

    replaces_forward = True

    def apply(self, x: Tensor) -> Tensor:
        r"""
        Args:
            x (Tensor): pre-activation.

        Returns:
            *Tensor* equal to ``relu(x)²`` whose gradient is ``relu(x)``.
        """
        return _SquaredReLUWithFrozenFactor.apply(x)

    def module_forward(self, module: nn.Module, x: Tensor) -> Tensor:  # type: ignore[override]
        """A squared-ReLU module (``ReLUSquaredActivation``) under the rule."""
        return self.apply(x)


class _SquaredReLUWithFrozenFactor(torch.autograd.Function):
    """``relu(x)²`` whose backward treats one ``relu(x)`` factor as a constant."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        rectified = F.relu(x)
        ctx.save_for_backward(rectified)
        return torch.square(rectified)  # as transformers computes it: the same value, bit for bit

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (rectified,) = ctx.saved_tensors
        # d/dx (x · [relu(x)]const) = relu(x): relevance x·relu(x)·grad = relu(x)²·grad, the output's
        return grad * rectified
