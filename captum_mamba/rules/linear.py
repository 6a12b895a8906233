"""Rules for linear and convolutional layers: LRP-0, LRP-epsilon, LRP-gamma.

LRP-0 is the plain gradient: the layer runs unchanged. The other rules follow Captum's
``PropagationRule`` classes (``EpsilonRule``, ``GammaRule``, ``Alpha1_Beta0_Rule``, ...):
a rule may rewrite the weights (``_manipulate_weights``) and has a stabiliser
(``STABILITY_FACTOR``). In the Gradient x Input engine such a rule becomes::

    out = z' * [y / (z' + eps * sign(z'))]const,     z' = layer with the rule's weights + eps * sign(z')

which keeps the value ``y`` and gives ``R_i = x_i * sum_j w'_ji R_j / (z'_j + eps sign(z'_j))``,
the textbook LRP rule for the layer (the bias absorbs the rest).
"""

from __future__ import annotations

import torch
from captum.attr._utils.lrp_rules import IdentityRule, PropagationRule
from torch import Tensor, nn

from captum_mamba.rules.base import MambaLRPRule


class GradientRule(MambaLRPRule):
    r"""LRP-0: relevance follows the plain gradient; the module's forward is left untouched."""

    replaces_forward = False


class _WeightView(nn.Module):
    """A parameterless stand-in holding cloned weights for a rule's ``_manipulate_weights``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.weight = nn.Parameter(module.weight.detach().clone(), requires_grad=False)
        bias = getattr(module, "bias", None)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)


def _run_with_weights(module: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    if isinstance(module, nn.Linear):
        return torch.nn.functional.linear(x, weight, bias)
    if isinstance(module, nn.Conv1d):
        return module._conv_forward(x, weight, bias)
    raise TypeError(f"no weight rule for {type(module).__name__}; supported: nn.Linear, nn.Conv1d")


def rule_forward(module: nn.Module, x: Tensor, rule: PropagationRule) -> Tensor:
    r"""
    Run a linear or convolutional ``module`` on ``x`` with a Captum-style ``rule`` applied.

    Args:
        module (nn.Module): an ``nn.Linear`` or ``nn.Conv1d``.
        x (Tensor): the module's input.
        rule (PropagationRule): ``GradientRule`` (plain), Captum's ``EpsilonRule``,
                    ``GammaRule``, ``Alpha1_Beta0_Rule`` or any rule that rewrites weights
                    through ``_manipulate_weights``; ``IdentityRule`` on shape-preserving layers.

    Returns:
        *Tensor* equal to ``module(x)`` with the rule's relevance flow.
    """
    y = _run_with_weights(module, x, module.weight, module.bias)
    if isinstance(rule, GradientRule):
        return y
    if isinstance(rule, IdentityRule):
        if y.shape != x.shape:
            raise ValueError(f"IdentityRule needs equal input and output shapes on {type(module).__name__}")
        return x * (y / _stabilise(x, rule.STABILITY_FACTOR)).detach()
    view = _WeightView(module)
    rule._manipulate_weights(view, (x,), y)
    z = _run_with_weights(module, x, view.weight, view.bias)
    stabiliser = rule.STABILITY_FACTOR * _sign(z).detach()
    z = z + stabiliser
    return z * (y / z).detach()


def _sign(z: Tensor) -> Tensor:
    sign = torch.sign(z)
    return torch.where(sign == 0, torch.ones_like(sign), sign)


def _stabilise(z: Tensor, eps: float) -> Tensor:
    return z + eps * _sign(z)
