"""The biases' share of an explained output, computed apart from the explainer under test.

With the MambaLRP rules in place the explained output is, at the input, a sum of terms linear in
the inputs and in the biases (the rules hold every non-linear factor constant and the gate's half
rule splits the product symmetrically), so ``output = Σ x · ∂output/∂x + Σ_b b · ∂output/∂b``.
MambaLRP reports the first sum as relevance and ``relevance - output`` as the convergence delta,
so the delta must equal minus the second sum. Here the second sum is computed on its own: one
forward under :func:`captum_mamba.mamba_lrp_rules` and one backward to the bias parameters, a
computation no explainer performs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

import captum_mamba


def bias_share(model: nn.Module, output: Callable[[Tensor], Tensor], embeds: Tensor) -> float:
    """
    ``Σ_b b · ∂output/∂b`` over the model's bias parameters, under the MambaLRP rules.

    Args:
        model (nn.Module): the model (its rules are the registered defaults).
        output (Callable): maps ``embeds`` to the explained scalar (e.g. one logit).
        embeds (Tensor): the input embeddings.

    Returns:
        *float*: the biases' share of ``output(embeds)`` (``-delta`` of a conserving explanation).
    """
    biases = [p for name, p in model.named_parameters() if name.endswith("bias")]
    flags = [p.requires_grad for p in biases]
    try:
        for parameter in biases:
            parameter.requires_grad_(True)
        with captum_mamba.mamba_lrp_rules(model):
            value = output(embeds.detach())
            gradients = torch.autograd.grad(value, biases, allow_unused=True)
    finally:
        for parameter, flag in zip(biases, flags):
            parameter.requires_grad_(flag)
    return sum(float((g * p.detach()).sum()) for g, p in zip(gradients, biases) if g is not None)
