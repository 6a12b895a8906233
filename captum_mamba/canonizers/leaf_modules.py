"""Leaf modules of a canonized Mamba model: one computation each, so Captum's LRP can hook it.

Captum's ``LRP`` hooks every leaf module: the relevance ``R`` arriving at a leaf's output is
divided by the output ``z``, sent back through the leaf's own forward (autograd), and multiplied
by each input ``x``: ``R_x = x * J^T (R / z)`` (the z-rule). For a leaf whose forward is linear
in its inputs, this is exactly Gradient x Input through the leaf. Each leaf below computes the
MambaLRP-modified forward of one piece of a Mamba block (same value, some factors held
constant), so Captum's engine gives MambaLRP's relevances. Tensors that must not carry
relevance (``delta``, ``A``, ``B``, ``C``, the attention mask) are passed as keyword arguments,
which Captum's forward hooks do not see, and are detached.

A leaf's rule lives in Captum's ``SUPPORTED_LAYERS_WITH_RULES`` (see
:mod:`captum_mamba.canonizers.leaf_rules`); a rule set on a leaf (``leaf.rule = ...``) takes
precedence and survives Captum's deletion of every ``module.rule`` after ``attribute()``
(captum issue #1059). The rule decides the leaf's forward: a MambaLRP rule
(:class:`~captum_mamba.rules.SiLUIdentityRule`, ...) gives the modified forward, any other rule
the plain one (the ablation of that MambaLRP rule).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import torch
import torch.nn.functional as F
from captum.attr._core import lrp as captum_lrp
from captum.attr._utils.lrp_rules import PropagationRule
from torch import Tensor, nn

from captum_mamba.canonizers.leaf_rules import HeldConstantRule, TokenEmbeddingRule
from captum_mamba.rules.gate import GateHalfRule
from captum_mamba.rules.linear import GradientRule
from captum_mamba.rules.norm import RMSNormRule, _epsilon_of, plain_rms_norm
from captum_mamba.rules.silu import SiLUIdentityRule
from captum_mamba.rules.ssm import SelectiveSSMRule


class CanonicalLeaf(nn.Module):
    r"""
    Base of the leaf modules. ``rule`` is a property: reading it raises ``AttributeError`` until a
    rule is set (so Captum falls back to its ``SUPPORTED_LAYERS_WITH_RULES``), setting it stores
    the rule, deleting it keeps the rule (Captum deletes ``module.rule`` after every
    ``attribute()``; a rule chosen for a leaf stays for the canonizer's lifetime). Set
    ``leaf.rule = None`` to go back to Captum's registry.
    """

    default_rule: ClassVar[type[PropagationRule]] = GradientRule

    def __init__(self) -> None:
        super().__init__()
        self._fallback_rule = self.default_rule()

    @property
    def rule(self) -> PropagationRule:
        attached = self.__dict__.get("_attached_rule")
        if attached is None:
            raise AttributeError(f"{type(self).__name__} has no rule set; Captum uses its registry's")
        return attached

    @rule.setter
    def rule(self, value: PropagationRule | None) -> None:
        if value is not None and not isinstance(value, PropagationRule):
            raise TypeError(f"a rule must be a captum PropagationRule, got {type(value).__name__}")
        self.__dict__["_attached_rule"] = value

    @rule.deleter
    def rule(self) -> None:
        """Kept on purpose: Captum's ``_remove_rules`` would otherwise drop it (captum#1059)."""

    def active_rule(self) -> PropagationRule:
        """The rule the forward follows: the one set on the leaf, else the registry default."""
        return self.__dict__.get("_attached_rule") or self._fallback_rule

    def extra_repr(self) -> str:
        attached = self.__dict__.get("_attached_rule")
        return "" if attached is None else f"rule={type(attached).__name__}"


class FanOut(CanonicalLeaf):
    r"""
    ``x -> (x, x, ...)`` stacked along dimension 1: the explicit copy of the residual stream.

    Captum hooks a tensor only at its first consuming leaf; a stream read by the norm and by the
    residual add would mix relevance and gradient there. Each consumer reads its own copy
    (``out[:, i]``); the z-rule sums the copies' relevances back onto ``x`` (LRP-0, conserving).

    Args:
        copies (int, optional): number of consumers. Default: 2
    """

    def __init__(self, copies: int = 2) -> None:
        super().__init__()
        self.copies = copies

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([x] * self.copies, dim=1)

    def extra_repr(self) -> str:
        return f"copies={self.copies}"


class ResidualAdd(CanonicalLeaf):
    """``residual + update``: relevance splits in proportion to the two terms (LRP-0)."""

    def forward(self, residual: Tensor, update: Tensor) -> Tensor:
        return residual + update


class CausalDepthwiseConv(CanonicalLeaf):
    r"""
    The mixer's causal depthwise ``conv1d`` on channel-last input ``(batch, length, channels)``;
    shares the ``weight`` and ``bias`` parameters of the ``nn.Conv1d`` it stands for (same
    ``state_dict`` keys). Linear: LRP-0 (the bias absorbs relevance).

    Args:
        conv (nn.Conv1d): the Hugging Face mixer's ``conv1d`` (padding ``kernel - 1``).
    """

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias
        self.padding = conv.padding
        self.groups = conv.groups
        self.dilation = conv.dilation
        self.stride = conv.stride

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[1]
        out = F.conv1d(x.transpose(1, 2), self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return out[..., :length].transpose(1, 2)


class SiLULeaf(CanonicalLeaf):
    r"""``silu(x)``; under :class:`~captum_mamba.rules.SiLUIdentityRule` as ``x * [sigmoid(x)]const`` (``R_in = R_out``)."""

    default_rule = SiLUIdentityRule

    def forward(self, x: Tensor) -> Tensor:
        rule = self.active_rule()
        return rule.apply(x) if isinstance(rule, SiLUIdentityRule) else F.silu(x)


class GateProduct(CanonicalLeaf):
    r"""
    ``y * g``; under :class:`~captum_mamba.rules.GateHalfRule` as ``0.5 p + 0.5 [p]const``, so each
    factor receives half of the product's relevance.
    """

    default_rule = GateHalfRule

    def forward(self, y: Tensor, gate: Tensor) -> Tensor:
        rule = self.active_rule()
        return rule.apply(y, gate) if isinstance(rule, GateHalfRule) else y * gate


class RMSNormLeaf(CanonicalLeaf):
    r"""
    ``w * x / rms(x)``; under :class:`~captum_mamba.rules.RMSNormRule` with the root mean square
    held constant (a diagonal linear map: ``R_in = R_out``). Shares the norm's ``weight``.
    Mamba2's gated norm is this leaf after the gate product leaf, per group of features.

    Args:
        norm (nn.Module): a Hugging Face RMSNorm (``weight`` and ``variance_epsilon`` or ``eps``;
                    ``group_size`` for Mamba2's grouped norm).
    """

    default_rule = RMSNormRule

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.weight = norm.weight
        self.eps = _epsilon_of(norm)
        self.group_size: int | None = getattr(norm, "group_size", None)

    def forward(self, x: Tensor) -> Tensor:
        rule = self.active_rule()
        norm = rule.apply if isinstance(rule, RMSNormRule) else plain_rms_norm
        return norm(x, self.weight, self.eps, self.group_size)

    def extra_repr(self) -> str:
        return f"eps={self.eps}" + ("" if self.group_size is None else f", group_size={self.group_size}")


class SelectiveSSMCore(CanonicalLeaf):
    r"""
    The selective scan ``y = SSM(u; delta, A, B, C) + D u`` with ``delta``, ``A`` (so ``A``-bar),
    ``B`` (so ``B``-bar) and ``C`` held constant: a linear map of ``u``, so relevance reaches the
    block only through ``u`` and the ``D`` skip (MambaLRP's SSM rule). The held-constant tensors
    are keyword arguments, invisible to Captum's hooks.

    Mamba-1 layout: ``u``, ``delta`` ``(batch, length, channels)``, ``A`` ``(channels, state)``,
    ``B``, ``C`` ``(batch, length, state)``, ``D`` ``(channels,)``. Mamba2 (SSD) layout, with
    ``head_dim`` given: ``u`` ``(batch, length, heads * head_dim)``, ``delta``
    ``(batch, length, heads)``, ``A`` and ``D`` ``(heads,)``, ``B``, ``C``
    ``(batch, length, groups, state)``.
    """

    default_rule = SelectiveSSMRule

    def forward(
        self,
        u: Tensor,
        *,
        delta: Tensor,
        A: Tensor,
        B: Tensor,
        C: Tensor,
        D: Tensor | None = None,
        head_dim: int | None = None,
        chunk_size: int = 256,
    ) -> Tensor:
        rule = self.active_rule()
        if not isinstance(rule, SelectiveSSMRule):
            raise TypeError(
                f"the SSM core runs under SelectiveSSMRule only, not {type(rule).__name__}: canonize holds the "
                "selection (delta, B, C) constant by construction; ablate the SSM rule with "
                "MambaLRP(model, rules={MixerType: MixerRule(ssm=None)}) instead"
            )
        held = [t.detach() for t in (delta, A, B, C)]
        skip = None if D is None else D.detach()
        if head_dim is None:
            y, last = rule.apply(u, *held, skip, return_last_state=True)
        else:
            batch, length, width = u.shape
            y, last = rule.apply_heads(u.reshape(batch, length, -1, head_dim), *held, skip, chunk_size=chunk_size)
            y = y.reshape(batch, length, width)
        self.last_state = last.detach()  # read by the mixer function (it fills a prefill cache)
        return y


class _Standin(CanonicalLeaf):
    """A leaf standing in for an original module, holding its parameters and buffers under the same names."""

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "original", original)  # not a submodule: this stays a leaf
        for name, parameter in original._parameters.items():
            self.register_parameter(name, parameter)
        for name, buffer in original._buffers.items():
            self.register_buffer(name, buffer, persistent=name not in original._non_persistent_buffers_set)

    def extra_repr(self) -> str:
        return type(self.original).__name__


class LinearLeaf(_Standin):
    r"""
    A linear layer of the model (``in_proj``, ``out_proj``, ``lm_head``, ``score``), sharing the
    ``nn.Linear``'s parameters. Its default rule is exact LRP-0
    (:class:`~captum_mamba.rules.GradientRule`, the bias absorbing relevance), matching MambaLRP;
    a Captum rule set on the original ``nn.Linear`` (``layer.rule = EpsilonRule(...)``) is
    carried over and, like every leaf rule, survives Captum's deletion after ``attribute()``.

    Args:
        original (nn.Linear): the layer it stands for.
    """

    def __init__(self, original: nn.Linear) -> None:
        super().__init__(original)
        rule = original.__dict__.get("rule")
        if isinstance(rule, PropagationRule):
            self.rule = copy.deepcopy(rule)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


class HeldConstant(_Standin):
    r"""
    A module on the held-constant path of a rule (``x_proj``, ``dt_proj``, FalconMamba's norms
    of ``dt``, ``B``, ``C``): runs the original module on detached inputs, returns a detached
    output; its rule (:class:`~captum_mamba.canonizers.leaf_rules.HeldConstantRule`) registers no
    hooks, so no relevance flows through it.

    Args:
        original (nn.Module): the module it stands for (its parameters are shared).
    """

    default_rule = HeldConstantRule

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.original(*(x.detach() for x in inputs)).detach()


class TokenEmbedding(_Standin):
    r"""
    The token embedding: Captum's LRP attributes to floating-point inputs, so a canonized model
    is explained from ``inputs_embeds``; its rule raises a clear error if token ids reach it
    during an attribution. Outside attributions it embeds as usual.

    Args:
        original (nn.Embedding): the embedding it stands for (its weight is shared).
    """

    default_rule = TokenEmbeddingRule

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.original(input_ids)


LEAF_TYPES: tuple[type[CanonicalLeaf], ...] = (
    FanOut,
    ResidualAdd,
    CausalDepthwiseConv,
    SiLULeaf,
    GateProduct,
    RMSNormLeaf,
    SelectiveSSMCore,
    LinearLeaf,
    HeldConstant,
    TokenEmbedding,
)


@contextmanager
def captum_leaf_rules(extra: dict[type[nn.Module], type[PropagationRule]] | None = None) -> Iterator[None]:
    r"""
    Enter each leaf type with its default rule (and the ``extra`` entries) in Captum's
    ``SUPPORTED_LAYERS_WITH_RULES`` (the table ``LRP`` and ``LayerLRP`` consult for leaves without
    ``module.rule``) for the duration of a ``with`` block; Captum's table is restored after.
    Captum's entries for torch's layers are left as they are.
    """
    table = captum_lrp.SUPPORTED_LAYERS_WITH_RULES
    saved = dict(table)
    try:
        table.update({leaf_type: leaf_type.default_rule for leaf_type in LEAF_TYPES})
        table.update(extra or {})
        yield
    finally:
        table.clear()
        table.update(saved)
