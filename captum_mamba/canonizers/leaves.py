"""Leaf modules that make a Mamba model explainable by Captum's own ``LRP`` / ``LayerLRP`` engine.

Captum's LRP puts a rule on every leaf module and, between leaves, lets relevance flow through
plain autograd. Each leaf here computes its MambaLRP rule as a forward that is *linear in its
relevance-carrying inputs*, the other factors detached (Eqs. 4, 6-7, 9 and App. C of the paper).
For such a leaf ``z = M x`` Captum's z-rule ``R_in = x * M^T (R_out / z)`` is what MambaLRP
propagates, so Captum's engine returns MambaLRP's relevances. Every leaf type is entered in
Captum's ``SUPPORTED_LAYERS_WITH_RULES`` (see :func:`register_with_captum`); Captum's entries for
torch's layer types are left as they are.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from captum.attr._core import lrp as captum_lrp
from captum.attr._utils.custom_modules import Addition_Module
from captum.attr._utils.lrp_rules import EpsilonRule
from torch import Tensor, nn

from captum_mamba.kernels.selective_scan import linear_selective_scan


class DetachedRMSNorm(nn.Module):
    r"""RMSNorm with the normaliser held constant (App. C): ``x * [1 / rms(x)]const * w``."""

    def __init__(self, weight: nn.Parameter, eps: float) -> None:
        super().__init__()
        self.weight = weight
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps).detach()
        return x * scale * self.weight


class SiLUIdentity(nn.Module):
    r"""SiLU with the sigmoid held constant (Eq. 4): ``x * [sigmoid(x)]const``."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(x).detach()


class CausalDepthwiseConv1d(nn.Module):
    r"""Mamba's depthwise causal convolution on ``(batch, length, channels)`` (a linear map)."""

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter | None) -> None:
        super().__init__()
        self.weight = weight
        self.bias = bias

    def forward(self, x: Tensor) -> Tensor:
        channels, _, width = self.weight.shape
        out = F.conv1d(x.transpose(1, 2), self.weight, self.bias, padding=width - 1, groups=channels)
        return out[..., : x.shape[1]].transpose(1, 2)


class SelectiveSSMCore(nn.Module):
    r"""
    The selective SSM with ``delta``, ``A``-bar, ``B``-bar and ``C`` held constant (Eqs. 6-7):
    the input-dependent parameters are computed from a detached copy of ``u``, so the output
    ``y = scan(u) + D u`` is linear in ``u``.
    """

    def __init__(self, mixer: nn.Module, rank: int, state: int) -> None:
        super().__init__()
        self.x_proj_weight = mixer.x_proj.weight
        self.dt_proj_weight = mixer.dt_proj.weight
        self.dt_proj_bias = mixer.dt_proj.bias
        self.A_log = mixer.A_log
        self.D = mixer.D
        self.rank = rank
        self.state = state

    def forward(self, u: Tensor) -> Tensor:
        selected = F.linear(u.detach(), self.x_proj_weight)
        dt, B, C = torch.split(selected, [self.rank, self.state, self.state], dim=-1)
        # the SSM parameters in the model's own precision (float32, as the Hugging Face mixer has them)
        delta = F.softplus(F.linear(dt, self.dt_proj_weight) + self.dt_proj_bias.float())
        A = -torch.exp(self.A_log.float())
        y = linear_selective_scan(u, delta, A, B, C).to(u.dtype)
        return y + u * self.D.float()


class GateHalfProduct(nn.Module):
    r"""The gate ``p = y * g`` as ``0.5 p + 0.5 [p]const`` (Eq. 9): each factor receives half of ``R_p``."""

    def forward(self, y: Tensor, gate: Tensor) -> Tensor:
        product = y * gate
        return 0.5 * product + 0.5 * product.detach()


class TokenPooling(nn.Module):
    r"""Mean or last-token pooling over the real tokens (a linear map); the mask is set per call."""

    def __init__(self, pooling: str) -> None:
        super().__init__()
        self.pooling = pooling
        self.attention_mask: Tensor | None = None

    def forward(self, hidden: Tensor) -> Tensor:
        from captum_mamba.models.classification import pool_hidden_states

        return pool_hidden_states(hidden, self.attention_mask, self.pooling)


class TokenEmbedding(nn.Module):
    r"""The embedding lookup (its relevance is read at its output; token ids carry none)."""

    def __init__(self, weight: nn.Parameter, padding_idx: int | None = None) -> None:
        super().__init__()
        self.weight = weight
        self.padding_idx = padding_idx

    def forward(self, input_ids: Tensor) -> Tensor:
        return F.embedding(input_ids, self.weight, self.padding_idx)


class OutputRelevanceRule(EpsilonRule):
    r"""LRP-epsilon that only hooks floating-point inputs (token ids have no gradient to hook)."""

    def forward_hook(self, module: nn.Module, inputs: Any, outputs: Tensor) -> Tensor:
        floating = tuple(x for x in inputs if torch.is_floating_point(x) and x.requires_grad)
        return super().forward_hook(module, floating, outputs) if floating else self._hook_output(outputs)

    def _hook_output(self, outputs: Tensor) -> Tensor:
        self._has_single_input = True
        self._handle_input_hooks = []
        self._handle_output_hook = outputs.register_hook(self._create_backward_hook_output(outputs.data))
        return outputs.clone()


LEAF_RULES: dict[type[nn.Module], type] = {
    DetachedRMSNorm: EpsilonRule,
    SiLUIdentity: EpsilonRule,
    CausalDepthwiseConv1d: EpsilonRule,
    SelectiveSSMCore: EpsilonRule,
    GateHalfProduct: EpsilonRule,
    TokenPooling: EpsilonRule,
    TokenEmbedding: OutputRelevanceRule,
}
"""The rule Captum's LRP attaches to each leaf type (the z-rule; epsilon 1e-9 only guards zeros)."""


def register_with_captum() -> None:
    """Enter the leaf types (only ours) in Captum's ``SUPPORTED_LAYERS_WITH_RULES``."""
    for leaf, rule in LEAF_RULES.items():
        captum_lrp.SUPPORTED_LAYERS_WITH_RULES.setdefault(leaf, rule)


__all__ = [
    "Addition_Module",
    "CausalDepthwiseConv1d",
    "DetachedRMSNorm",
    "GateHalfProduct",
    "LEAF_RULES",
    "OutputRelevanceRule",
    "SelectiveSSMCore",
    "SiLUIdentity",
    "TokenEmbedding",
    "TokenPooling",
    "register_with_captum",
]
