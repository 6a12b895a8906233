r"""The bounded-input rule z^B for the first layer, whose inputs (pixels) lie in a known box.

For inputs ``l_j <= x_j <= h_j`` (Montavon et al., "Explaining nonlinear classification
decisions with deep Taylor decomposition", 2017)::

    R_j = Σ_k (x_j w_jk - l_j w⁺_jk - h_j w⁻_jk) / z^B_k · R_k,
    z^B_k = Σ_j (x_j w_jk - l_j w⁺_jk - h_j w⁻_jk) = Σ_j (x_j - l_j) w⁺_jk + (x_j - h_j) w⁻_jk  >= 0.

The denominator leaves the bias out, so the rule conserves exactly: ``Σ_j R_j = Σ_k R_k`` (the
bias's share goes to the pixels; nothing is absorbed). The bound terms make ``R_j`` non-zero
where ``x_j = 0``, which Gradient x Input cannot express: the rule's backward returns the
``x_j w_jk`` part as the gradient and records ``-l_j (W⁺ᵀ s)_j - h_j (W⁻ᵀ s)_j`` for its input
(:mod:`captum_mamba.input_relevance`); ``MambaLRP`` / ``LayerMambaLRP`` add it to the input's
relevance.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from captum_mamba.input_relevance import InputRelevance, current_input_relevance
from captum_mamba.rules.base import MambaLRPRule
from captum_mamba.rules.gamma import _apply

Bound = float | Tensor


def _as_bound(value: Bound, x: Tensor) -> Tensor:
    r"""A bound broadcast to ``x``: a number, or per channel ``(channels,)`` for ``(batch, channels, ...)`` inputs."""
    bound = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if bound.dim() == 1 and x.dim() > 2:
        bound = bound.reshape(1, -1, *([1] * (x.dim() - 2)))
    return bound.expand_as(x)


def _transposed(module: nn.Module, x: Tensor, weight: Tensor, grad_out: Tensor) -> Tensor:
    """``Wᵀ grad_out`` for the layer with ``weight`` (the gradient of ``layer(x)`` w.r.t. ``x``)."""
    with torch.enable_grad():
        probe = x.detach().requires_grad_()
        (grad,) = torch.autograd.grad(_apply(module, probe, weight, None), probe, grad_out)
    return grad


class BoundedInputRule(MambaLRPRule):
    r"""
    z^B for a linear or convolutional first layer (e.g. Vision Mamba's patch projection), whose
    inputs lie in ``[low, high]``. For normalised images, the bounds are the normalised black
    and white: ``low = (0 - mean) / std``, ``high = (1 - mean) / std`` per channel.

    Args:
        low (float or Tensor): lower bound, one number or one per channel.
        high (float or Tensor): upper bound, one number or one per channel.

    Raises (at explanation time):
        ValueError: if an input lies outside the bounds (the rule's denominator is then not
                    guaranteed positive).
    """

    replaces_forward = True

    def __init__(self, low: Bound, high: Bound) -> None:
        self.low, self.high = low, high

    @classmethod
    def for_normalised_images(cls, mean: Any, std: Any) -> BoundedInputRule:
        """The bounds of images in ``[0, 1]`` normalised as ``(x - mean) / std`` (per channel)."""
        mean, std = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(std, dtype=torch.float64)
        return cls((0 - mean) / std, (1 - mean) / std)

    def module_forward(self, module: nn.Module, x: Tensor) -> Tensor:  # type: ignore[override]
        low, high = _as_bound(self.low, x), _as_bound(self.high, x)
        tolerance = 1e-6 * float(torch.max(high.abs().max(), low.abs().max()))
        if bool((x < low - tolerance).any() or (x > high + tolerance).any()):
            raise ValueError(
                f"BoundedInputRule: inputs lie outside [{self.low}, {self.high}] (min {float(x.detach().min()):.4g}, max "
                f"{float(x.detach().max()):.4g}); give the bounds of the normalised input range, or use SignedGammaRule"
            )
        return _BoundedInput.apply(x, low, high, module, current_input_relevance())

    def __repr__(self) -> str:
        return "BoundedInputRule(low=..., high=...)"


class _BoundedInput(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, x: Tensor, low: Tensor, high: Tensor, module: nn.Module, recorded: InputRelevance | None
    ) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, low, high)
        ctx.module, ctx.recorded = module, recorded
        ctx.input = x  # the tensor object itself: its relevance is recorded under its identity
        return _apply(module, x, module.weight, module.bias)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, low, high = ctx.saved_tensors
        module = ctx.module
        weight = module.weight
        w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
        z = _apply(module, x, weight, module.bias)
        z_box = _apply(module, x, weight, None) - _apply(module, low, w_pos, None) - _apply(module, high, w_neg, None)
        relevance = z * grad  # R_k as Gradient x Input of the layer's output
        share = torch.where(z_box > 0, relevance / torch.where(z_box > 0, z_box, 1), torch.zeros_like(relevance))
        if ctx.recorded is not None:
            bound_terms = -low * _transposed(module, x, w_pos, share) - high * _transposed(module, x, w_neg, share)
            ctx.recorded.add(ctx.input, bound_terms)
        return _transposed(module, x, weight, share), None, None, None, None
