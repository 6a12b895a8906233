"""The reversible rule context: swap rule-applying forwards into a model, restore it on exit."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from captum.attr._utils.lrp_rules import PropagationRule
from torch import nn

from captum_mamba.errors import UnsupportedModuleError
from captum_mamba.families import FAMILIES
from captum_mamba.registry import DEFAULT_REGISTRY, RuleRegistry, RuleSpec, _instantiate
from captum_mamba.rules.base import MambaLRPRule
from captum_mamba.rules.linear import GradientRule, rule_forward
from captum_mamba.rules.mixer import MixerRule

_MISSING = object()


@dataclass
class RulePlan:
    """Which rule each module of a model gets, and which module types have none."""

    rules: dict[str, PropagationRule] = field(default_factory=dict)
    unsupported: dict[str, list[str]] = field(default_factory=dict)
    fallbacks: dict[str, list[str]] = field(default_factory=dict)

    def describe(self) -> str:
        """One line per module that has a rule other than LRP-0."""
        return "\n".join(
            f"{name or '<root>'}: {rule!r}" for name, rule in self.rules.items() if not isinstance(rule, GradientRule)
        )


def _has_own_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def _resolve_rule(
    module: nn.Module, overrides: Mapping[type[nn.Module], RuleSpec], registry: RuleRegistry
) -> PropagationRule | None:
    rule = _chosen_rule(module, overrides, registry)
    if isinstance(rule, MixerRule) and rule.layout is None:
        # e.g. an ablation MixerRule(ssm=None): the layout is the one the family declares
        layout = (registry.families or FAMILIES).mixer_layout(type(module))
        if layout is None:
            raise TypeError(
                f"MixerRule needs a layout for {type(module).__name__}, which no model family declares: "
                "declare its family (captum_mamba.families.register_family) or pass MixerRule(layout=...)"
            )
        rule = rule.with_layout(layout)
    return rule


def _chosen_rule(
    module: nn.Module, overrides: Mapping[type[nn.Module], RuleSpec], registry: RuleRegistry
) -> PropagationRule | None:
    own = getattr(module, "rule", _MISSING)
    if own is not _MISSING and own is not None:
        return _instantiate(own)
    for klass in type(module).__mro__:
        if klass in overrides:
            return _instantiate(overrides[klass])
    return registry.lookup(type(module))


Fallback = bool | Iterable[type[nn.Module]]


def plan_rules(
    model: nn.Module,
    overrides: Mapping[type[nn.Module], RuleSpec] | None = None,
    registry: RuleRegistry | None = None,
    plain_gradient_fallback: Fallback = False,
) -> RulePlan:
    r"""
    Decide the rule of every module of ``model`` without changing it.

    A module's rule is, in order of precedence: its ``module.rule`` attribute (Captum's
    convention), the ``overrides`` entry for its type, the registry entry for its type. A
    module with no rule is accepted when a rewritten ancestor covers it or when it is a
    parameter-free container; otherwise its type is reported as unsupported.

    Args:
        model (nn.Module): the model.
        overrides (Mapping, optional): ``{module_type: rule}`` taking precedence over the registry.
        registry (RuleRegistry, optional): defaults to the package's registry.
        plain_gradient_fallback (bool or Iterable[type], optional): module types without a rule
                    that may run unchanged (plain gradient) instead of being reported; ``True``
                    for all. A warning names them: relevance through them is not conserved.
                    Default: False

    Returns:
        *RulePlan* with the rule of each named module and the unsupported types with their paths.
    """
    overrides = dict(overrides or {})
    registry = registry or DEFAULT_REGISTRY
    plan = RulePlan()

    for name, module in model.named_modules(remove_duplicate=False):
        rule = _resolve_rule(module, overrides, registry)
        if rule is not None:
            plan.rules[name] = rule
        elif not list(module.children()) or _has_own_parameters(module):
            if _falls_back(type(module), plain_gradient_fallback):
                plan.rules[name] = GradientRule()
                plan.fallbacks.setdefault(type(module).__name__, []).append(name or "<root>")
            else:
                plan.unsupported.setdefault(type(module).__name__, []).append(name or "<root>")
    if plan.fallbacks:
        warnings.warn(
            f"no MambaLRP rule for {', '.join(plan.fallbacks)}: using the plain gradient through them, "
            "so relevance is not conserved there",
            stacklevel=3,
        )
    return plan


def _falls_back(module_type: type[nn.Module], fallback: Fallback) -> bool:
    if isinstance(fallback, bool):
        return fallback
    return any(issubclass(module_type, allowed) for allowed in fallback)


def _forward_for(module: nn.Module, rule: PropagationRule):
    if isinstance(rule, GradientRule):
        return None
    if isinstance(rule, MambaLRPRule):
        return functools.partial(rule.module_forward, module) if rule.replaces_forward else None
    if isinstance(module, (nn.Linear, nn.Conv1d)):
        return functools.partial(rule_forward, module, rule=rule)
    raise TypeError(
        f"{type(rule).__name__} can only be applied to nn.Linear or nn.Conv1d in MambaLRP, "
        f"not to {type(module).__name__}"
    )


@contextmanager
def mamba_lrp_rules(
    model: nn.Module,
    overrides: Mapping[type[nn.Module], RuleSpec] | None = None,
    registry: RuleRegistry | None = None,
    plain_gradient_fallback: Fallback = False,
) -> Iterator[RulePlan]:
    r"""
    Apply MambaLRP rules to ``model`` for the duration of a ``with`` block.

    Inside the block, every module with a rewriting rule runs the rule's forward (same output
    values, modified gradients), so one forward and one backward pass give MambaLRP relevances
    as Gradient x Input. On exit, also after an exception, the model's forwards are restored
    exactly; parameters, buffers and hooks are never touched.

    Args:
        model (nn.Module): the model to patch.
        overrides (Mapping, optional): ``{module_type: rule}`` taking precedence over the registry;
                    ``None`` as a rule switches a type to LRP-0 (plain gradient).
        registry (RuleRegistry, optional): defaults to the package's registry.
        plain_gradient_fallback (bool or Iterable[type], optional): see :func:`plan_rules`.

    Returns:
        *RulePlan*: the rules that were applied.

    Raises:
        UnsupportedModuleError: if the model has module types without a rule.
    """
    plan = plan_rules(model, overrides, registry, plain_gradient_fallback)
    if plan.unsupported:
        raise UnsupportedModuleError(plan.unsupported)
    modules = dict(model.named_modules(remove_duplicate=False))
    saved: list[tuple[nn.Module, object]] = []
    try:
        for name, rule in plan.rules.items():
            forward = _forward_for(modules[name], rule)
            if forward is not None:
                module = modules[name]
                saved.append((module, module.__dict__.get("forward", _MISSING)))
                module.forward = forward
        yield plan
    finally:
        for module, previous in reversed(saved):
            if previous is _MISSING:
                del module.forward
            else:
                module.forward = previous
