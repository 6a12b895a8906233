r"""LRP-γ for layers whose inputs take both signs (pixels, patch embeddings).

Captum's ``GammaRule`` (``w + γ w⁺``) assumes non-negative inputs (post-ReLU activations). For
inputs of either sign the γ rule favours the contributions ``z_jk = x_j w_jk`` that share the
sign of their output (Montavon et al., "Layer-wise relevance propagation: an overview", 2019;
zennit's ``Gamma``)::

    z^γ_jk = z_jk + γ [z_jk]^±,     R_j = Σ_k z^γ_jk / z^γ_k · R_k,
    z^γ_k = Σ_j z^γ_jk + b_k + γ [b_k]^±,

where ``[·]^±`` is the positive part for ``z_k ≥ 0`` and the negative part otherwise. ``z^γ_k``
has the sign of ``z_k`` and at least its size, so the rule is stable; the bias share
``(b_k + γ [b_k]^±) / z^γ_k · R_k`` is what the rule absorbs (zero for a bias-free layer:
then it conserves relevance exactly). In the Gradient x Input engine::

    out = z^γ · [z / z^γ]const

keeps the value ``z`` and gives ``x_j ∂out/∂x_j = R_j`` above, because
``x_j ∂[Σ_j (x_j w_jk)^+]/∂x_j = (x_j w_jk)^+`` (split ``x`` and ``w`` by sign).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_mamba.rules.base import MambaLRPRule


def _apply(module: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    if isinstance(module, nn.Conv2d):
        return module._conv_forward(x, weight, bias)
    if isinstance(module, nn.Conv1d):
        return module._conv_forward(x, weight, bias)
    if isinstance(module, nn.Linear):
        return F.linear(x, weight, bias)
    raise TypeError(f"SignedGammaRule applies to nn.Linear, nn.Conv1d and nn.Conv2d, not {type(module).__name__}")


def signed_contributions(module: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    r"""
    The sums of the positive and of the negative contributions ``x_j w_jk`` (and bias) to each
    output of a linear or convolutional layer.

    Returns:
        *tuple* ``(positive, negative)``, each shaped like the layer's output; their sum is the output.
    """
    weight, bias = module.weight, module.bias
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    x_pos, x_neg = x.clamp(min=0), x.clamp(max=0)
    b_pos = None if bias is None else bias.clamp(min=0)
    b_neg = None if bias is None else bias.clamp(max=0)
    positive = _apply(module, x_pos, w_pos, b_pos) + _apply(module, x_neg, w_neg, None)
    negative = _apply(module, x_pos, w_neg, b_neg) + _apply(module, x_neg, w_pos, None)
    return positive, negative


class SignedGammaRule(MambaLRPRule):
    r"""
    LRP-γ for a linear or convolutional layer whose input has either sign (see the module
    docstring). The default rule of Vision Mamba's patch-embedding convolution, which is also
    the layer that reads the pixels.

    Args:
        gamma (float, optional): the weight of same-signed contributions. ``0`` is LRP-0
                    (Gradient x Input); large values approach the z⁺-style rule. Default: 0.25
                    (the MambaLRP paper's vision setting)
    """

    replaces_forward = True

    def __init__(self, gamma: float = 0.25) -> None:
        if gamma < 0:
            raise ValueError(f"gamma must be non-negative, got {gamma}")
        self.gamma = gamma

    def module_forward(self, module: nn.Module, x: Tensor) -> Tensor:  # type: ignore[override]
        z = _apply(module, x, module.weight, module.bias)
        if self.gamma == 0:
            return z
        positive, negative = signed_contributions(module, x)
        favoured = torch.where(z.detach() >= 0, positive, negative)
        z_gamma = z + self.gamma * favoured
        # z^γ has z's sign and |z^γ| >= |z|; it is 0 only where every contribution is 0 (then z = 0)
        ratio = torch.where(z_gamma == 0, torch.zeros_like(z), z / torch.where(z_gamma == 0, 1, z_gamma)).detach()
        return z_gamma * ratio

    def absorbed(self, module: nn.Module, x: Tensor, output_relevance: Tensor) -> Tensor:
        r"""
        The relevance the bias absorbs, per example: ``Σ_k (b_k + γ [b_k]^±) / z^γ_k · R_k``.

        Args:
            module (nn.Module): the layer.
            x (Tensor): its input.
            output_relevance (Tensor): the relevance of its outputs ``R_k``.

        Returns:
            *Tensor* ``(batch,)``; zeros for a bias-free layer.
        """
        z = _apply(module, x, module.weight, module.bias)
        if module.bias is None:
            return z.new_zeros(z.shape[0])
        positive, negative = signed_contributions(module, x)
        z_gamma = z + self.gamma * torch.where(z >= 0, positive, negative)
        shape = [1, -1] + [1] * (z.dim() - 2)
        bias = module.bias.reshape(shape)
        bias_gamma = bias + self.gamma * torch.where(z >= 0, bias.clamp(min=0), bias.clamp(max=0))
        share = torch.where(z_gamma == 0, torch.zeros_like(z), bias_gamma / torch.where(z_gamma == 0, 1, z_gamma))
        return (share * output_relevance).flatten(1).sum(1)

    def __repr__(self) -> str:
        return f"SignedGammaRule(gamma={self.gamma})"
