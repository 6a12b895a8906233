r"""Attention rules at transformers' attention-function interface: AttnLRP and CP-LRP.

A Hugging Face attention module projects ``q``, ``k``, ``v`` (with its own linear layers, rotary
embeddings and ``q``/``k`` norms, which are linear maps or get their own norm rules), then calls
the function its config names in ``config._attn_implementation`` through
``ALL_ATTENTION_FUNCTIONS``. While an :class:`AttentionRule` runs a module, that name is
switched to :data:`ATTENTION_NAME`, a function registered here that computes the same attention
(eager arithmetic; the masks of the eager and SDPA implementations are both understood) with
the rule applied, so every family's attention is covered without copying its modeling code.

* **AttnLRP** (Achtibat et al., ICML 2024): the softmax by its Gradient x Input rule (which, in
  a Gradient x Input engine, is the softmax's own gradient; it does not conserve, the rest is
  reported in the convergence delta), and the uniform rule on both bilinear products
  ``q·kᵀ`` and ``A·V``: each factor receives half of the product's relevance
  (``0.5·(a·[b]const) + 0.5·([a]const·b)``, as MambaLRP's gate rule).
* **CP-LRP** (Ali et al., 2022; the SSM rule's idea): the attention weights ``A`` are held
  constant, so the output is linear in ``V`` and relevance flows through the values only; it
  conserves exactly.

Grouped-query heads are repeated (a linear copy) and the scaling is a constant factor.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor, nn

from captum_mamba.rules.base import MambaLRPRule

#: The attention-implementation name the rules register with transformers.
ATTENTION_NAME = "captum_mamba_lrp"
MODES = ("attnlrp", "cp")

_ACTIVE: ContextVar[AttentionRule | None] = ContextVar("captum_mamba_attention_rule", default=None)


class _HalfMatmul(torch.autograd.Function):
    """``a @ b`` whose backward gives each factor half of its gradient (the uniform rule on a bilinear product)."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        a, b = ctx.saved_tensors
        half = 0.5 * grad
        return half @ b.transpose(-1, -2), a.transpose(-1, -2) @ half


def half_matmul(a: Tensor, b: Tensor) -> Tensor:
    r"""
    ``a @ b`` with the uniform rule: relevance splits evenly between the two factors.

    Args:
        a (Tensor): ``(..., n, k)``.
        b (Tensor): ``(..., k, m)``.

    Returns:
        *Tensor* ``(..., n, m)``, equal to ``a @ b``.
    """
    return _HalfMatmul.apply(a, b)


def repeat_heads(states: Tensor, groups: int) -> Tensor:
    """Grouped-query attention: each key/value head serves ``groups`` query heads (a linear copy)."""
    if groups == 1:
        return states
    batch, heads, length, dim = states.shape
    return states[:, :, None].expand(batch, heads, groups, length, dim).reshape(batch, heads * groups, length, dim)


def _masked_scores(scores: Tensor, attention_mask: Tensor | None, causal: bool) -> Tensor:
    """Apply an eager (additive float), SDPA (boolean, True = attend) or absent (causal) mask."""
    if attention_mask is not None:
        mask = attention_mask[..., : scores.shape[-1]]
        if mask.dtype == torch.bool:
            return scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        return scores + mask.to(scores.dtype)
    if causal and scores.shape[-2] > 1:
        queries, keys = scores.shape[-2:]
        allowed = torch.ones(queries, keys, dtype=torch.bool, device=scores.device).tril(keys - queries)
        return scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    return scores


def attention_with_rules(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    r"""
    The attention function registered as :data:`ATTENTION_NAME` (transformers' interface:
    ``(module, query, key, value, attention_mask, scaling, dropout, **kwargs) -> (output, weights)``),
    with the rule of the :class:`AttentionRule` running the module.

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
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_heads(key, groups), repeat_heads(value, groups)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    key_t = key.transpose(-1, -2)
    scores = (half_matmul(query, key_t) if rule.mode == "attnlrp" else query @ key_t) * scale
    scores = _masked_scores(scores, attention_mask, getattr(module, "is_causal", True))
    # in float32 or wider, as eager attention computes it, never narrowing a float64 model
    weights = torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(query.dtype)
    if rule.mode == "cp":
        output = weights.detach() @ value  # CP-LRP: the attention weights held constant
    else:
        output = half_matmul(weights, value)
    return output.transpose(1, 2).contiguous(), weights


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
    """

    replaces_forward = True

    def __init__(self, mode: str = "attnlrp") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode

    def module_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        _register()
        config = getattr(module, "config", None)
        if config is None or not hasattr(config, "_attn_implementation"):
            raise TypeError(
                f"AttentionRule runs attention modules that call transformers' attention interface through "
                f"their config; {type(module).__name__} has no config"
            )
        with _implementation(config, ATTENTION_NAME), _active(self):
            return type(module).forward(module, *args, **kwargs)

    def __repr__(self) -> str:
        return f"AttentionRule({self.mode!r})"


@contextmanager
def _implementation(config: Any, name: str) -> Iterator[None]:
    saved = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = saved


@contextmanager
def _active(rule: AttentionRule) -> Iterator[None]:
    token = _ACTIVE.set(rule)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


__all__ = ["ATTENTION_NAME", "AttentionRule", "attention_with_rules", "half_matmul", "repeat_heads"]
