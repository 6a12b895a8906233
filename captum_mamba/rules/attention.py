r"""Attention rules at transformers' attention-function interface: AttnLRP and CP-LRP.

A Hugging Face attention module projects ``q``, ``k``, ``v`` (with its own linear layers, rotary
embeddings and ``q``/``k`` norms, which are linear maps or get their own norm rules), then calls
the function its config names in ``config._attn_implementation`` through
``ALL_ATTENTION_FUNCTIONS``. While an :class:`AttentionRule` runs a module, that name is
switched to :data:`ATTENTION_NAME`, a function registered here that computes the same attention
(through PyTorch's ``scaled_dot_product_attention``; the masks of the eager and SDPA
implementations are both understood) with the rule applied as gradient scalings, so every
family's attention is covered without copying its modeling code.

* **AttnLRP** (Achtibat et al., ICML 2024): the softmax by its Gradient x Input rule (which, in
  a Gradient x Input engine, is the softmax's own gradient; it does not conserve, the rest is
  reported in the convergence delta), and the uniform rule on both bilinear products
  ``q·kᵀ`` and ``A·V``: each factor receives half of the product's relevance
  (``0.5·(a·[b]const) + 0.5·([a]const·b)``, as MambaLRP's gate rule).
* **CP-LRP** (Ali et al., 2022; the SSM rule's idea): the attention weights ``A`` are held
  constant, so the output is linear in ``V`` and relevance flows through the values only; it
  conserves exactly.

Grouped-query heads are repeated (a linear copy) and the scaling is a constant factor. An output
gate ``attention(...) · σ(g)`` that the module's own forward applies (Qwen3-Next, Qwen3.5) gets
the :class:`~captum_mamba.rules.gate.SigmoidGateRule`: the half rule on the product, the identity
rule on the sigmoid (in both modes).
"""

from __future__ import annotations

from contextlib import nullcontext
from contextvars import ContextVar
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_mamba.rules.base import MambaLRPRule
from captum_mamba.rules.dispatch import dispatched_to
from captum_mamba.rules.gate import SigmoidGateRule

#: The attention-implementation name the rules register with transformers.
ATTENTION_NAME = "captum_mamba_lrp"
MODES = ("attnlrp", "cp")

_ACTIVE: ContextVar[AttentionRule | None] = ContextVar("captum_mamba_attention_rule", default=None)


def repeat_heads(states: Tensor, groups: int) -> Tensor:
    """Grouped-query attention: each key/value head serves ``groups`` query heads (a linear copy)."""
    if groups == 1:
        return states
    batch, heads, length, dim = states.shape
    return states[:, :, None].expand(batch, heads, groups, length, dim).reshape(batch, heads * groups, length, dim)


class _ScaledGradient(torch.autograd.Function):
    """The identity whose backward multiplies the gradient by a constant."""

    @staticmethod
    def forward(ctx, x: Tensor, factor: float) -> Tensor:  # type: ignore[override]
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad * ctx.factor, None


def _additive_mask(attention_mask: Tensor | None, keys: int, dtype: torch.dtype, queries: int = 0) -> Tensor | None:
    r"""
    An eager (additive float) or SDPA (boolean, True = attend) mask as an additive float mask. A
    2-D ``(batch, keys)`` padding mask (1 = real token), what models configured for
    flash-attention pass, becomes the causal mask of ``queries`` positions (the last ones) with
    the pads masked.
    """
    if attention_mask is None:
        return None
    if attention_mask.dim() == 2:
        real = attention_mask[:, :keys].bool()
        offset = keys - queries
        positions = torch.arange(keys, device=real.device)
        causal = positions[None, :] <= (positions[offset:, None] if queries else positions[:, None])
        attention_mask = causal[None, None] & real[:, None, None, :]
    mask = attention_mask[..., :keys]
    if mask.dtype == torch.bool:  # the most negative number, not -inf: a fully masked row stays finite
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    return mask.to(dtype)


def attention_with_rules(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    r"""
    The attention function registered as :data:`ATTENTION_NAME` (transformers' interface:
    ``(module, query, key, value, attention_mask, scaling, dropout, **kwargs) -> (output, weights)``),
    with the rule of the :class:`AttentionRule` running the module.

    The rules are gradient scalings around PyTorch's ``scaled_dot_product_attention`` (whatever
    kernel it picks: flash / memory-efficient on CUDA, linear memory in the length). With
    ``S = s·QKᵀ``, ``A = softmax(S)``, ``O = AV`` and the uniform rule on both products, the
    backward gives ``dV = 0.5·Aᵀ dO`` and ``dA = 0.5·dO Vᵀ``, then ``dQ = 0.5·s·softmax'(dA) K``:
    a quarter of the plain gradient for ``Q`` and ``K`` and half for ``V``. CP-LRP detaches ``Q``
    and ``K`` (``A`` constant). Grouped-query heads are repeated after the scalings (a linear copy).

    Returns:
        *tuple* ``(output (batch, length, heads, head_dim), None)``.

    Raises:
        NotImplementedError: for attention variants the rules do not cover (logit soft-capping,
                    attention sinks, dropout while training).
    """
    rule = _ACTIVE.get()
    if rule is None:
        raise RuntimeError(f"the {ATTENTION_NAME!r} attention runs only inside an AttentionRule")
    for unsupported in ("softcap", "s_aux", "sinks"):
        if kwargs.get(unsupported) is not None:
            raise NotImplementedError(f"the attention rules do not cover {unsupported!r} attention")
    if dropout and module.training:
        raise NotImplementedError("explain a model in eval mode (attention dropout is active)")
    if rule.mode == "attnlrp":
        query, key, value = (_ScaledGradient.apply(t, f) for t, f in ((query, 0.25), (key, 0.25), (value, 0.5)))
    else:  # CP-LRP: the attention weights are constants of q and k
        query, key = query.detach(), key.detach()
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_heads(key, groups), repeat_heads(value, groups)
    mask = _additive_mask(attention_mask, key.shape[-2], query.dtype, query.shape[-2])
    causal = mask is None and getattr(module, "is_causal", True) and query.shape[-2] > 1
    if causal and query.shape[-2] != key.shape[-2]:
        raise NotImplementedError("the attention rules explain whole sequences (no cached prefix)")
    output = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, is_causal=causal, scale=scaling)
    return output.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if ATTENTION_NAME not in ALL_ATTENTION_FUNCTIONS:
        ALL_ATTENTION_FUNCTIONS.register(ATTENTION_NAME, attention_with_rules)
    if ATTENTION_NAME not in ALL_MASK_ATTENTION_FUNCTIONS:
        ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_NAME, eager_mask)


class AttentionRule(MambaLRPRule):
    r"""
    The rule of a Hugging Face attention module (any class that calls transformers' attention
    interface): the module's own forward runs, and its call of the attention function computes
    the attention under the rule (see the module docstring).

    Args:
        mode (str, optional): ``"attnlrp"`` (softmax Gradient x Input rule, uniform rule on both
                    products; not exactly conservative) or ``"cp"`` (CP-LRP: attention weights
                    held constant; conservative). Default: "attnlrp"
        output_gate (SigmoidGateRule, optional): the rule of a sigmoid output gate
                    ``attention(...) · σ(g)`` formed in the module's own forward (gated attention:
                    Qwen3-Next, Qwen3.5; modules without one are unaffected); ``None``: the plain
                    product. Default: ``SigmoidGateRule("half")``
    """

    replaces_forward = True
    components = {"gate": "output_gate"}

    def __init__(self, mode: str = "attnlrp", output_gate: SigmoidGateRule | None = SigmoidGateRule()) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.output_gate = output_gate

    def module_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        _register()
        config = getattr(module, "config", None)
        if config is None or not hasattr(config, "_attn_implementation"):
            raise TypeError(
                f"AttentionRule runs attention modules that call transformers' attention interface through "
                f"their config; {type(module).__name__} has no config"
            )
        gates = nullcontext() if self.output_gate is None else self.output_gate.in_forward()
        with dispatched_to(config, "_attn_implementation", ATTENTION_NAME, _ACTIVE, self), gates:
            return type(module).forward(module, *args, **kwargs)

    def __repr__(self) -> str:
        return (
            f"AttentionRule({self.mode!r})"
            if self.output_gate is not None
            else f"AttentionRule({self.mode!r}, no gate rule)"
        )


__all__ = ["ATTENTION_NAME", "AttentionRule", "attention_with_rules", "repeat_heads"]
