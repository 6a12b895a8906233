"""transformers' float32 casts removed from the linear-attention hybrids, so their own forwards run in float64.

transformers computes the gated delta rules (Gated DeltaNet, Kimi Delta Attention), the gated
output norms, the Gated DeltaNets' decays, the zero-centred norms (``x.float()``, ``w.float()``),
Kimi's forget gate and Kimi's router in float32 even for float64 models. The shared fixture
(``conftest.float64_faithful_hf``) removes the casts every family shares (RMSNorms, eager
attention, the Mamba scans); these functions remove the rest, one family's modeling module at a
time (each family's entry in ``family_references.py`` names its own): the delta rules by the
references' plain recurrences (every input live), the gated norms by cast-free forwards written
from transformers' (normalise, scale, then gate), the router by a cast-free copy of its
computation (so that a batch, its rows alone and the reference route with the same float64
weights: the suite compares them to 1e-10), and ``Tensor.float()`` keeping float64 inside the forwards that call it (their own
code, otherwise unchanged).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from reference_gated_delta import float64_chunk_gated_delta_rule
from reference_kimi_lfm2 import float64_chunk_kda


@contextmanager
def float_keeping_float64() -> Iterator[None]:
    """``Tensor.float()`` leaves float64 tensors as they are (only while the context is open)."""
    narrowing = torch.Tensor.float

    def float_keeping(self: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return self if self.dtype == torch.float64 else narrowing(self, *args, **kwargs)

    torch.Tensor.float = float_keeping
    try:
        yield
    finally:
        torch.Tensor.float = narrowing


def without_float_casts(forward: Callable[..., Any]) -> Callable[..., Any]:
    """``forward`` (a module's own) with ``Tensor.float()`` keeping float64 while it runs."""

    @functools.wraps(forward)
    def wrapped(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        with float_keeping_float64():
            return forward(self, *args, **kwargs)

    return wrapped


def _normalised(norm: torch.nn.Module, hidden_states: Tensor) -> Tensor:
    return hidden_states * torch.rsqrt(hidden_states.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)


def gated_norm_silu(self: torch.nn.Module, hidden_states: Tensor, gate: Tensor) -> Tensor:
    """The Gated DeltaNets' output norm ``rmsnorm(o) · w · silu(z)`` without its float32 cast."""
    return self.weight * _normalised(self, hidden_states) * F.silu(gate)


def gated_norm_sigmoid(self: torch.nn.Module, hidden_states: Tensor, gate: Tensor) -> Tensor:
    """Kimi Delta Attention's output norm ``rmsnorm(o) · w · σ(gate)`` without its float32 cast."""
    return self.weight * _normalised(self, hidden_states) * torch.sigmoid(gate)


def kimi_router(self: torch.nn.Module, hidden_states: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Kimi's router (one expert group) without its float32 casts: sigmoid scores, corrected top-k, renormalised."""
    assert self.num_group == 1, "the cast-free router routes one expert group"
    hidden_states = hidden_states.view(-1, self.hidden_dim)
    logits = F.linear(hidden_states, self.weight)
    scores = logits.sigmoid()
    indices = torch.topk(scores + self.e_score_correction_bias, k=self.top_k, dim=-1, sorted=False)[1]
    weights = scores.gather(1, indices)
    if self.norm_topk_prob:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return logits, weights * self.routed_scaling_factor, indices


def gated_delta_hybrid(modeling: ModuleType, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    r"""
    A Gated DeltaNet hybrid's casts removed (Qwen3-Next, Qwen3.5, Qwen3.5-MoE, OLMo hybrid): the
    delta rule, the output norm, the decays in the Gated DeltaNet's own forward and the
    zero-centred RMSNorm's (Qwen's; OLMo's plain RMSNorm is the shared fixture's).

    Args:
        modeling (ModuleType): the family's ``modeling_*`` module.
        prefix (str): its classes' prefix (``"Qwen3Next"``, ``"Qwen3_5"``, ...).
        monkeypatch (pytest.MonkeyPatch): undoes the patches after the test.
    """
    monkeypatch.setattr(modeling, "torch_chunk_gated_delta_rule", float64_chunk_gated_delta_rule)
    monkeypatch.setattr(getattr(modeling, prefix + "RMSNormGated"), "forward", gated_norm_silu)
    kinds = ["GatedDeltaNet"] if prefix == "OlmoHybrid" else ["GatedDeltaNet", "RMSNorm"]
    for kind in kinds:
        module_type = getattr(modeling, prefix + kind)
        monkeypatch.setattr(module_type, "forward", without_float_casts(module_type.forward))


def kimi_linear(modeling: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    r"""
    Kimi Linear's casts removed: the Kimi delta rule, the sigmoid-gated output norm, the router and
    the forget gate (its RMSNorms are the shared fixture's).

    Args:
        modeling (ModuleType): ``modeling_kimi_linear``.
        monkeypatch (pytest.MonkeyPatch): undoes the patches after the test.
    """
    monkeypatch.setattr(modeling, "chunk_kimi_delta_attention", float64_chunk_kda)
    monkeypatch.setattr(modeling.KimiLinearRMSNormGated, "forward", gated_norm_sigmoid)
    monkeypatch.setattr(modeling.KimiLinearTopkRouter, "forward", kimi_router)
    forget = modeling.KimiLinearForgetGate
    monkeypatch.setattr(forget, "forward", without_float_casts(forget.forward))
