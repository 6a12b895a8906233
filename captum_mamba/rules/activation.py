r"""Identity rules for element-wise activations: the squared ReLU ``relu(x)²`` (Nemotron-H's MLP
activation, ``ACT2FN["relu2"]``) and the sigmoid of a gate (:class:`SigmoidIdentityRule`).

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


class SigmoidIdentityRule(MambaLRPRule):
    r"""
    AttnLRP's identity rule for the sigmoid (a gate's activation, e.g. Qwen3-Next's attention
    output gate): ``R_in = R_out`` element-wise.

    The sigmoid is written as ``x · [σ(x)/x]const``: the forward value is ``σ(x)``, the gradient
    ``σ(x)/x``, so Gradient x Input gives ``x · σ(x)/x · R/σ(x) = R``. Unlike SiLU's, the factor
    ``σ(x)/x`` has a pole at ``x = 0`` (``σ(0) = 1/2``): the denominator is stabilised as LRP's
    ε-rule does, ``x + ε·sign(x)`` with ``ε`` the input dtype's machine epsilon, which leaves
    ``R_in = R_out·x/(x + ε·sign(x))`` (a relative change below ``ε/|x|``) and bounds the gradient
    by ``σ(x)/ε``.
    """

    replaces_forward = True

    def apply(self, x: Tensor) -> Tensor:
        r"""
        Args:
            x (Tensor): pre-activation.

        Returns:
            *Tensor* equal to ``σ(x)`` whose gradient is ``σ(x)/(x + ε·sign(x))``.
        """
        return _SigmoidWithFrozenRatio.apply(x)

    def module_forward(self, module: nn.Module, x: Tensor) -> Tensor:  # type: ignore[override]
        """An ``nn.Sigmoid`` module under the rule."""
        return self.apply(x)


class _SigmoidWithFrozenRatio(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        out = torch.sigmoid(x)
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        x, out = ctx.saved_tensors
        eps = torch.finfo(x.dtype).eps
        stabilised = x + eps * torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
        return grad * out / stabilised  # d/dx of x·[σ(x)/x]const
