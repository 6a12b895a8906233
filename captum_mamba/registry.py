"""Rules by module type: torch's layers, the declared model families, and the user's additions.

A registry maps an ``nn.Module`` subclass to a Captum ``PropagationRule`` (an instance, or a
class instantiated per use). The default registry reads the declared model families
(:mod:`captum_mamba.families`) at lookup time; users add single entries with
:func:`register_rule`. Lookup follows the class hierarchy, so a subclass of a supported module
inherits its rule unless it has its own entry.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from captum.attr._utils.lrp_rules import PropagationRule
from torch import nn

from captum_mamba.families import FAMILIES, FamilyRegistry
from captum_mamba.heads import TokenPooling
from captum_mamba.rules.linear import GradientRule
from captum_mamba.rules.norm import LayerNormRule
from captum_mamba.rules.silu import SiLUIdentityRule

RuleSpec = PropagationRule | type[PropagationRule] | None


def _instantiate(rule: RuleSpec) -> PropagationRule:
    if rule is None:
        return GradientRule()
    if isinstance(rule, type):
        if not issubclass(rule, PropagationRule):
            raise TypeError(f"{rule.__name__} is not a captum PropagationRule subclass")
        return rule()
    if not isinstance(rule, PropagationRule):
        raise TypeError(f"a rule must be a captum PropagationRule, got {type(rule).__name__}")
    return rule


class RuleRegistry:
    r"""
    Default rules by module type.

    Args:
        rules (Mapping, optional): initial ``{module_type: rule}`` entries. ``None`` as a rule
                    means LRP-0 (:class:`~captum_mamba.rules.GradientRule`): the module's own
                    forward is used, as for containers whose forward only composes children.
        families (FamilyRegistry, optional): declared model families whose rules the registry
                    serves (read at every lookup, so families declared later count); entries
                    of ``rules`` and :meth:`register` take precedence for the same type.
    """

    def __init__(
        self, rules: Mapping[type[nn.Module], RuleSpec] | None = None, families: FamilyRegistry | None = None
    ) -> None:
        self._rules: dict[type[nn.Module], RuleSpec] = {}
        self.families = families
        for module_type, rule in (rules or {}).items():
            self.register(module_type, rule)

    def register(self, module_type: type[nn.Module], rule: RuleSpec) -> None:
        r"""
        Args:
            module_type (type): an ``nn.Module`` subclass.
            rule (PropagationRule, type or None): the rule for modules of that type.
        """
        if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
            raise TypeError(f"module_type must be an nn.Module subclass, got {module_type!r}")
        _instantiate(rule)  # validate now rather than at explanation time
        self._rules[module_type] = rule

    def unregister(self, module_type: type[nn.Module]) -> None:
        """Remove the entry for ``module_type`` (a ``KeyError`` if there is none)."""
        del self._rules[module_type]

    @contextmanager
    def registered(self, module_type: type[nn.Module], rule: RuleSpec) -> Iterator[None]:
        """Register ``rule`` for ``module_type`` inside a ``with`` block, then restore the entry."""
        had, previous = module_type in self._rules, self._rules.get(module_type)
        self.register(module_type, rule)
        try:
            yield
        finally:
            if had:
                self._rules[module_type] = previous
            else:
                self._rules.pop(module_type, None)

    def lookup(self, module_type: type[nn.Module]) -> PropagationRule | None:
        """The rule for ``module_type`` (nearest registered base class), or ``None`` if unknown."""
        declared = {} if self.families is None else self.families.rules()
        for klass in module_type.__mro__:
            if klass in self._rules:
                return _instantiate(self._rules[klass])
            if klass in declared:
                return _instantiate(declared[klass])
        return None

    def __contains__(self, module_type: type[nn.Module]) -> bool:
        declared = {} if self.families is None else self.families.rules()
        return any(klass in self._rules or klass in declared for klass in module_type.__mro__)

    def copy(self) -> RuleRegistry:
        """An independent copy (rules are shared, entries are not; the families are the same)."""
        return RuleRegistry(dict(self._rules), self.families)

    def entries(self) -> dict[type[nn.Module], RuleSpec]:
        """Every ``{module_type: rule}`` entry: the declared families', then the registered ones."""
        entries = {} if self.families is None else dict(self.families.rules())
        entries.update(self._rules)
        return entries


DEFAULT_REGISTRY = RuleRegistry(
    {
        nn.Linear: GradientRule,
        nn.Conv1d: GradientRule,
        nn.Embedding: GradientRule,
        nn.Dropout: GradientRule,
        nn.Identity: GradientRule,
        nn.ModuleList: GradientRule,
        nn.ModuleDict: GradientRule,
        nn.Sequential: GradientRule,
        nn.SiLU: SiLUIdentityRule,
        nn.LayerNorm: LayerNormRule,
        TokenPooling: GradientRule,
    },
    families=FAMILIES,
)


def register_rule(module_type: type[nn.Module], rule: RuleSpec) -> None:
    r"""
    Register the default MambaLRP rule for a module type, e.g. to support a new Mamba variant.

    Args:
        module_type (type): an ``nn.Module`` subclass.
        rule (PropagationRule, type or None): a :class:`~captum_mamba.rules.MambaLRPRule` that
                    rewrites the module's forward, one of Captum's rules for linear or
                    convolutional layers (``EpsilonRule``, ``GammaRule``, ...), or ``None`` for
                    LRP-0 (the module's own forward; right for containers).
    """
    DEFAULT_REGISTRY.register(module_type, rule)
