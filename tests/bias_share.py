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

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

import captum_mamba


def bias_share(
    model: nn.Module,
    output: Callable[[Tensor], Tensor],
    embeds: Tensor,
    rules: Mapping[type[nn.Module], Any] | None = None,
) -> float:
    """
    ``Σ_b b · ∂output/∂b`` over the model's bias parameters, under the MambaLRP rules.

    Args:
        model (nn.Module): the model (its rules are the registered defaults).
        output (Callable): maps ``embeds`` to the explained scalar (e.g. one logit).
        embeds (Tensor): the input embeddings.
        rules (Mapping, optional): ``{module type: rule}`` overriding the defaults (e.g. CP-LRP's
                    attention rule: with the attention weights held constant the explained output
                    is linear in the inputs and the biases, as above).

    Returns:
        *float*: the biases' share of ``output(embeds)`` (``-delta`` of a conserving explanation).
    """
    biases = [p for name, p in model.named_parameters() if name.endswith("bias")]
    flags = [p.requires_grad for p in biases]
    try:
        for parameter in biases:
            parameter.requires_grad_(True)
        with captum_mamba.mamba_lrp_rules(model, overrides=rules):
            value = output(embeds.detach())
            gradients = torch.autograd.grad(value, biases, allow_unused=True)
    finally:
        for parameter, flag in zip(biases, flags):
            parameter.requires_grad_(flag)
    return sum(float((g * p.detach()).sum()) for g, p in zip(gradients, biases) if g is not None)
