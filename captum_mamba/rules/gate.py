"""Multiplicative gate rules: the half rule (MambaLRP, Eq. 9: ``0.5 * a * b + 0.5 * [a * b]const``) and
sigmoid gates ``x · σ(g)`` found inside a module's own forward (:class:`SigmoidGateRule`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from captum_mamba.rules.activation import SigmoidIdentityRule
from captum_mamba.rules.base import MambaLRPRule


class GateHalfRule(MambaLRPRule):
    r"""
    Splits the relevance of a product ``p = a * b`` of two relevance-carrying factors evenly.

    With both factors locally linear in the input, Gradient x Input gives ``2 p`` through the
    product; halving the gradient path (and keeping the value) restores conservation: each
    factor receives half of ``R_p``.
    """

    def apply(self, a: Tensor, b: Tensor) -> Tensor:
        r"""
        Args:
            a (Tensor): first factor (the SSM output ``y`` in Mamba).
            b (Tensor): second factor (``silu(z)`` in Mamba), broadcastable with ``a``.

        Returns:
            *Tensor* equal to ``a * b`` whose gradient is half that of the product.
        """
        return _HalfGradientProduct.apply(a, b)


class _HalfGradientProduct(torch.autograd.Function):
    """``a * b`` whose backward is half the product's: the value of ``0.5 p + 0.5 [p]const``, fused."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:  # type: ignore[override]
        a, b = ctx.saved_tensors
        half = 0.5 * grad
        grad_a = _unbroadcast(half * b, a.shape) if ctx.needs_input_grad[0] else None
        grad_b = _unbroadcast(half * a, b.shape) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


def _unbroadcast(grad: Tensor, shape: torch.Size) -> Tensor:
    if grad.shape == shape:
        return grad
    while grad.dim() > len(shape):
        grad = grad.sum(0)
    for dim, size in enumerate(shape):
        if size == 1 and grad.shape[dim] != 1:
            grad = grad.sum(dim, keepdim=True)
    return grad


#: The functions a forward computes a sigmoid or a product with (``a * b`` arrives as ``Tensor.mul``).
_SIGMOIDS = frozenset({torch.sigmoid, torch.Tensor.sigmoid, torch._C.TensorBase.sigmoid})
_PRODUCTS = frozenset(
    {torch.mul, torch.Tensor.mul, torch._C.TensorBase.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__}
)
GATE_MODES = ("half", "constant")


class SigmoidGateRule(MambaLRPRule):
    r"""
    A product ``x · σ(g)`` of a relevance carrier ``x`` and a sigmoid gate of an input-dependent
    pre-activation ``g`` (Qwen3-Next's and Qwen3.5's attention output gate, their MoE blocks'
    shared-expert gate).

    Args:
        mode (str, optional): ``"half"``: both factors carry relevance: the half rule on the
                    product (each factor receives half of it, :class:`GateHalfRule`) and the
                    identity rule on the sigmoid
                    (:class:`~captum_mamba.rules.activation.SigmoidIdentityRule`), so ``x`` and
                    ``g`` receive half each. ``"constant"``: the gate is held constant, as the
                    routing weights of a mixture of experts: all of the product's relevance goes
                    to ``x``, none to ``g``. Default: "half"
    """

    def __init__(self, mode: str = "half") -> None:
        if mode not in GATE_MODES:
            raise ValueError(f"mode must be one of {GATE_MODES}, got {mode!r}")
        self.mode = mode

    def apply(self, x: Tensor, gate: Tensor) -> Tensor:
        r"""
        Args:
            x (Tensor): the gated factor.
            gate (Tensor): the gate's pre-activation ``g``, broadcastable with ``x``.

        Returns:
            *Tensor* equal to ``x * sigmoid(gate)``, with the rule's gradients.
        """
        if self.mode == "constant":
            return x * torch.sigmoid(gate).detach()
        return _HalfGradientProduct.apply(x, SigmoidIdentityRule().apply(gate))

    @contextmanager
    def in_forward(self) -> Iterator[list[int]]:
        r"""
        For a ``with`` block around a module's own forward: every product ``x * sigmoid(g)`` the
        forward forms (``torch.sigmoid`` / ``Tensor.sigmoid`` / ``F.sigmoid``, then a
        multiplication with the result) is computed by :meth:`apply` instead, with the same value;
        other computations run as they are. The forward is not copied: the products are found at
        PyTorch's function interface (a ``TorchFunctionMode`` active only inside the block).

        Returns:
            *list* that counts the products the rule was applied to (one entry each).
        """
        applied: list[int] = []
        with _SigmoidGates(self, applied):
            yield applied

    def __repr__(self) -> str:
        return f"SigmoidGateRule({self.mode!r})"


class _SigmoidGates(TorchFunctionMode):
    """Finds ``x * sigmoid(g)`` at the torch-function interface and computes it under a :class:`SigmoidGateRule`."""

    def __init__(self, rule: SigmoidGateRule, applied: list[int]) -> None:
        super().__init__()
        self.rule = rule
        self.applied = applied
        self.sigmoids: dict[int, tuple[Tensor, Tensor]] = {}  # id(output) -> (output, pre-activation), kept alive

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in _SIGMOIDS and len(args) == 1 and not kwargs:
            out = func(*args)
            self.sigmoids[id(out)] = (out, args[0])
            return out
        if func in _PRODUCTS and len(args) == 2 and not kwargs:
            for gate_side in (1, 0):
                entry = self.sigmoids.get(id(args[gate_side]))
                if entry is not None and entry[0] is args[gate_side] and isinstance(args[1 - gate_side], Tensor):
                    self.applied.append(1)
                    return self.rule.apply(args[1 - gate_side], entry[1])
        return func(*args, **kwargs)


CONV_GATE_MODES = ("constant", "half")


class ShortConvGateRule(MambaLRPRule):
    r"""
    The two input-dependent gates of a gated short convolution, LFM2's
    ``y = C ⊙ conv(B ⊙ x)`` with ``B``, ``C``, ``x`` linear projections of the layer's input
    (``in_proj``) and a depthwise causal convolution between the products.

    Args:
        mode (str, optional): ``"constant"``: ``B`` and ``C`` held constant, as the SSM rule holds
                    the selection ``B``, ``C``, ``Δ`` of Mamba constant: ``y`` is then linear in
                    ``x`` and all of its relevance reaches ``x`` (and none ``B`` or ``C``).
                    ``"half"``: the half rule on both products, as Mamba's output gate (MambaLRP,
                    Eq. 9): ``C ⊙ conv(…)`` and ``B ⊙ x`` each split their relevance evenly
                    between their factors, so of ``y``'s relevance ``C`` receives a half, ``B``
                    and ``x`` a quarter each (the convolution, linear, passes its half on
                    between the two products). Both conserve exactly: with
                    ``B``, ``C`` constants ``y`` is linear in ``x`` (Euler's identity), and the
                    half rule gives each factor of a product of two locally linear factors half of
                    the product's relevance, which sum to it. The default, ``"half"``, was chosen
                    by measured faithfulness: on a tiny LFM2 trained on the synthetic copying task
                    its token-flipping ΔA^F is higher than with the gates held constant, with either
                    attention rule and either replacement (``benchmarks/lfm2_gate_choice.py``,
                    ``docs/linear_attention.md``). Default: "half"
    """

    def __init__(self, mode: str = "half") -> None:
        if mode not in CONV_GATE_MODES:
            raise ValueError(f"mode must be one of {CONV_GATE_MODES}, got {mode!r}")
        self.mode = mode

    def apply(self, gate: Tensor, x: Tensor) -> Tensor:
        r"""
        Args:
            gate (Tensor): the gate (``B`` or ``C``).
            x (Tensor): the gated factor (``x``, or the convolution's output), same shape.

        Returns:
            *Tensor* equal to ``gate * x``, with the rule's gradients.
        """
        if self.mode == "constant":
            return gate.detach() * x
        return _HalfGradientProduct.apply(gate, x)

    def __repr__(self) -> str:
        return f"ShortConvGateRule({self.mode!r})"
