"""What a model family declares, and the list of declared families everything else derives from."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from captum.attr._utils.lrp_rules import PropagationRule
from torch import nn

from captum_mamba.mixers.layouts import MixerLayout
from captum_mamba.rules.block import BlockRule
from captum_mamba.rules.linear import GradientRule
from captum_mamba.rules.mixer import MixerRule

RuleSpec = PropagationRule | type[PropagationRule] | None


@dataclass(frozen=True)
class ModelFamily:
    r"""
    One model family, declared once. The rule registry (MambaLRP), the canonizer (Captum's own
    ``LRP`` / ``LayerLRP``) and the shared test suite are all derived from this declaration.

    Args:
        name (str): the family's name, e.g. ``"mamba2"``.
        mixers (Mapping): ``{mixer type: MixerLayout}``: each mixer runs the layout's mixer
                    function under :class:`~captum_mamba.rules.MixerRule` (MambaLRP) or on
                    canonical leaves (``canonize``).
        norms (Mapping): ``{norm type: rule}``: RMSNorms get
                    :class:`~captum_mamba.rules.RMSNormRule` (canonized to an RMSNorm leaf),
                    gated norms :class:`~captum_mamba.rules.GatedRMSNormRule` (canonized with
                    their mixer), norms on a held-constant path ``GradientRule``.
        blocks (Mapping): ``{residual block type: BlockRule}``: the block's own forward runs
                    (``residual + mixer(norm(x))``); canonize splits the residual stream with
                    hooks.
        containers (tuple): module types whose own forward only composes ruled modules
                    (backbones, heads): plain LRP-0.
        rules (Mapping, optional): further ``{module type: rule}`` entries.
        causal_lm (type, optional): the family's causal-LM class.
        classifier (type, optional): the family's sequence-classification class (its config
                    takes ``num_labels``, ``pooling``, ``classifier_bias``).
        config (Callable, optional): ``config(**overrides)``: the Hugging Face configuration
                    of a tiny bias-free model of the family (a vocabulary of 40 unless
                    ``vocab_size`` is given; runnable in float64 on the CPU: SDPA attention,
                    eager experts; any setting can be overridden). The shared test suite and
                    random-configuration runs build their models from it
                    (:meth:`build_lm`, :meth:`build_classifier`); see
                    :mod:`captum_mamba.families.tiny`.
        random_config (Callable, optional): ``random_config(rng)``: overrides of ``config``
                    drawn at random (from a ``random.Random``) for the configuration sweep:
                    small sizes, layer patterns, head, group and expert counts.
        canonizable (bool, optional): whether ``canonize`` can turn it into Captum leaves.
                    Default: True
    """

    name: str
    mixers: Mapping[type[nn.Module], MixerLayout]
    norms: Mapping[type[nn.Module], RuleSpec] = field(default_factory=dict)
    blocks: Mapping[type[nn.Module], BlockRule] = field(default_factory=dict)
    containers: tuple[type[nn.Module], ...] = ()
    rules: Mapping[type[nn.Module], RuleSpec] = field(default_factory=dict)
    causal_lm: type[nn.Module] | None = None
    classifier: type[nn.Module] | None = None
    config: Callable[..., Any] | None = None
    random_config: Callable[[random.Random], dict[str, Any]] | None = None
    canonizable: bool = True

    def module_rules(self) -> dict[type[nn.Module], RuleSpec]:
        """The MambaLRP rule of every module type the family declares."""
        return dict(self._module_rules)

    @functools.cached_property
    def _module_rules(self) -> dict[type[nn.Module], RuleSpec]:
        entries: dict[type[nn.Module], RuleSpec] = {}
        entries.update({module_type: MixerRule(layout=layout) for module_type, layout in self.mixers.items()})
        entries.update(self.norms)
        entries.update(self.blocks)
        entries.update({module_type: GradientRule for module_type in self.containers})
        entries.update(self.rules)
        return entries

    def build_lm(self, **overrides: Any) -> nn.Module:
        """The family's causal LM on its tiny test configuration (random weights)."""
        if self.causal_lm is None or self.config is None:
            raise ValueError(f"the {self.name} family declares no causal LM with a test configuration")
        return self.causal_lm(self.config(**overrides))

    def build_classifier(
        self, pooling: str = "mean", classifier_bias: bool = False, num_labels: int = 3, **overrides: Any
    ) -> nn.Module:
        """The family's sequence classifier on its tiny test configuration (random weights)."""
        if self.classifier is None or self.config is None:
            raise ValueError(f"the {self.name} family declares no classifier with a test configuration")
        config = self.config(**overrides)
        config.pooling, config.classifier_bias, config.num_labels = pooling, classifier_bias, num_labels
        return self.classifier(config)


class FamilyRegistry:
    r"""
    The declared model families: the package's own and those a user registers.

    Args:
        families (tuple): the built-in declarations.
    """

    def __init__(self, families: tuple[ModelFamily, ...] = ()) -> None:
        self._builtin = tuple(families)
        self._registered: list[ModelFamily] = []
        self._rules: dict[type[nn.Module], RuleSpec] | None = None  # derived, rebuilt after a change

    def register(self, family: ModelFamily) -> None:
        r"""
        Declare a model family: MambaLRP, ``LayerMambaLRP`` and ``canonize`` support its models
        from now on.

        Raises:
            ValueError: if a family of that name is already declared.
        """
        if not isinstance(family, ModelFamily):
            raise TypeError(f"register a ModelFamily, got {type(family).__name__}")
        if any(existing.name == family.name for existing in self.families()):
            raise ValueError(f"a model family named {family.name!r} is already declared")
        self._registered.append(family)
        self._rules = None

    def unregister(self, family: ModelFamily) -> None:
        """Remove a family that :meth:`register` declared."""
        self._registered.remove(family)
        self._rules = None

    @contextmanager
    def registered(self, family: ModelFamily) -> Iterator[ModelFamily]:
        """Declare ``family`` for the duration of a ``with`` block."""
        self.register(family)
        try:
            yield family
        finally:
            self.unregister(family)

    def families(self) -> tuple[ModelFamily, ...]:
        """The declared families, built-in first."""
        return (*self._builtin, *self._registered)

    def family_of(self, module_type: type[nn.Module]) -> ModelFamily | None:
        """The family declaring ``module_type`` (or its nearest declared base class)."""
        for klass in module_type.__mro__:
            for family in reversed(self.families()):
                if klass in family._module_rules:
                    return family
        return None

    def mixer_layout(self, mixer_type: type[nn.Module]) -> MixerLayout | None:
        """The layout a family declares for ``mixer_type`` (or its nearest declared base class)."""
        for klass in mixer_type.__mro__:
            for family in reversed(self.families()):
                if klass in family.mixers:
                    return family.mixers[klass]
        return None

    def rules(self) -> Mapping[type[nn.Module], RuleSpec]:
        """Every declared ``{module type: rule}`` (read-only; later declarations win)."""
        if self._rules is None:
            entries: dict[type[nn.Module], RuleSpec] = {}
            for family in self.families():
                entries.update(family._module_rules)
            self._rules = entries
        return self._rules
