"""``canonize(model)``: restructure a model of the declared families into leaves for Captum's LRP, reversibly."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from captum.attr._core import lrp as captum_lrp
from captum.attr._utils.lrp_rules import PropagationRule
from torch import nn

from captum_mamba.canonizers.edits import ModelEdits, restore_captum_attributes, snapshot_captum_attributes
from captum_mamba.canonizers.leaf_modules import CanonicalLeaf, HeldConstant, SelectiveSSMCore, captum_leaf_rules
from captum_mamba.canonizers.structure import canonize_block, canonize_mixer, leaf_for
from captum_mamba.errors import UnsupportedModuleError
from captum_mamba.families import FAMILIES, FamilyRegistry
from captum_mamba.heads import TokenPooling
from captum_mamba.registry import DEFAULT_REGISTRY
from captum_mamba.rules.linear import GradientRule
from captum_mamba.rules.mixer import MixerRule
from captum_mamba.rules.norm import RMSNormRule
from captum_mamba.rules.ssm import SelectiveSSMRule

RuleChoice = PropagationRule | type[PropagationRule]


class UnsupportedCanonizationError(UnsupportedModuleError):
    """The model has modules that :func:`canonize` cannot turn into leaves with Captum rules."""

    def __init__(self, module_types: dict[str, list[str]], reason: str) -> None:
        self.module_types = module_types
        listing = "; ".join(
            f"{name} (at {', '.join(paths[:3])}{', ...' if len(paths) > 3 else ''})"
            for name, paths in module_types.items()
        )
        TypeError.__init__(self, f"canonize cannot prepare this model for Captum's LRP: {listing}: {reason}")


@dataclass
class Canonization:
    r"""
    What :func:`canonize` did: the canonical leaves by path and the residual blocks (each usable
    as the layer of ``captum.attr.LayerLRP``).
    """

    leaves: dict[str, CanonicalLeaf] = field(default_factory=dict)
    blocks: list[nn.Module] = field(default_factory=list)


def _paths_by_type(modules: list[tuple[str, nn.Module]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, module in modules:
        found.setdefault(type(module).__name__, []).append(name or "<root>")
    return found


def _check_canonizable(model: nn.Module, families: FamilyRegistry) -> None:
    modules = list(model.named_modules())
    if any(isinstance(module, CanonicalLeaf) for _, module in modules):
        raise ValueError("the model is already canonized (nested canonize)")
    other_mixers = [
        (name, module)
        for name, module in modules
        if isinstance(DEFAULT_REGISTRY.lookup(type(module)), MixerRule)
        and not _canonizable_family(type(module), families)
    ]
    if other_mixers:
        raise UnsupportedCanonizationError(
            _paths_by_type(other_mixers),
            "canonize restructures the mixers of the declared model families that allow it "
            f"({', '.join(f.name for f in families.families() if f.canonizable)}); explain this mixer with "
            "captum_mamba.MambaLRP",
        )


def _canonizable_family(module_type: type[nn.Module], families: FamilyRegistry) -> bool:
    family = families.family_of(module_type)
    return family is not None and family.canonizable and families.mixer_layout(module_type) is not None


def _rms_norm_types(families: FamilyRegistry) -> tuple[type[nn.Module], ...]:
    """The declared norm types under the plain RMSNorm rule (gated norms go with their mixer)."""
    found = []
    for family in families.families():
        for norm_type, rule in family.norms.items():
            rule_type = rule if isinstance(rule, type) else type(rule)
            if rule_type is RMSNormRule:
                found.append(norm_type)
    return tuple(found)


def _restructure(model: nn.Module, families: FamilyRegistry, edits: ModelEdits) -> list[nn.Module]:
    """Edit every declared module of ``model`` into leaves; returns the residual blocks."""
    blocks = []
    mixers = []
    for _, module in list(model.named_modules()):
        family = families.family_of(type(module))
        if family is None or not family.canonizable:
            continue
        layout = families.mixer_layout(type(module))
        if layout is not None:
            canonize_mixer(module, layout, edits)
            mixers.append(module)
        elif any(isinstance(module, block_type) for block_type in family.blocks):
            blocks.append(module)
    for block in blocks:
        canonize_block(block, edits)
    norm_types = _rms_norm_types(families)
    for _, parent in list(model.named_modules()):
        family = families.family_of(type(parent))
        if family is None or isinstance(parent, CanonicalLeaf) or any(parent is m for m in mixers):
            continue  # the user's own modules stay as they are
        for name, child in list(parent.named_children()):
            leaf = leaf_for(child, norm_types)
            if leaf is not None:
                edits.replace_child(parent, name, leaf)
    return blocks


def _has_captum_rule(module: nn.Module) -> bool:
    return (
        hasattr(module, "rule")
        or type(module) in captum_lrp.SUPPORTED_LAYERS_WITH_RULES
        or type(module) in captum_lrp.SUPPORTED_NON_LINEAR_LAYERS
    )


def _check_leaves_have_rules(model: nn.Module) -> None:
    missing = [
        (name, module)
        for name, module in model.named_modules()
        if not list(module.children()) and not _has_captum_rule(module)
    ]
    if missing:
        raise UnsupportedCanonizationError(
            _paths_by_type(missing),
            "these leaf modules have no Captum LRP rule after canonization (is this a supported Mamba "
            "model?); set module.rule on them or explain with captum_mamba.MambaLRP",
        )


def _pin_rules(leaves: dict[str, CanonicalLeaf], rules: Mapping[type[nn.Module], RuleChoice]) -> None:
    for leaf_type, rule in rules.items():
        if not (isinstance(leaf_type, type) and issubclass(leaf_type, CanonicalLeaf)):
            raise TypeError(f"rules= keys must be canonical leaf types (captum_mamba.canonizers), got {leaf_type!r}")
        if not (isinstance(rule, PropagationRule) or (isinstance(rule, type) and issubclass(rule, PropagationRule))):
            raise TypeError(f"a rule must be a captum PropagationRule or its class, got {rule!r}")
        rule_type = rule if isinstance(rule, type) else type(rule)
        if issubclass(leaf_type, SelectiveSSMCore) and not issubclass(rule_type, SelectiveSSMRule):
            raise ValueError(
                f"canonize cannot run the SSM core under {rule_type.__name__}: the selection (delta, B, C) is held "
                "constant by construction (x_proj and dt_proj are held-constant leaves). Ablate the SSM rule with "
                "MambaLRP(model, rules={MixerType: MixerRule(ssm=None)})"
            )
        if issubclass(leaf_type, HeldConstant):
            raise ValueError("held-constant leaves carry no relevance; a rule pinned on them would never apply")
        for leaf in leaves.values():
            if isinstance(leaf, leaf_type):
                leaf.rule = copy.deepcopy(rule) if isinstance(rule, PropagationRule) else rule()


@contextmanager
def canonize(
    model: nn.Module,
    rules: Mapping[type[nn.Module], RuleChoice] | None = None,
    families: FamilyRegistry | None = None,
) -> Iterator[Canonization]:
    r"""
    Restructure a model of the declared families (:mod:`captum_mamba.families`) into leaf
    modules for Captum's own ``LRP`` and ``LayerLRP``, for the duration of a ``with`` block
    (zennit calls this a canonizer). Captum's ``SUPPORTED_LAYERS_WITH_RULES`` gets the leaves'
    rules inside the block only.

    Inside the block every residual block is ``fan_out -> norm -> mixer -> residual_add`` and
    every mixer ``in_proj -> conv -> SiLU -> SSM core -> gate product (with SiLU(z)) -> out_proj``
    (Mamba2: the group norm after the gate product),
    each a leaf whose Captum rule reproduces MambaLRP: ``captum.attr.LRP`` on the canonized model
    returns MambaLRP's relevances, and ``captum.attr.LayerLRP(model, block)`` those of
    ``LayerMambaLRP`` at a block. The model's outputs are unchanged. On exit, also after an
    exception, the original modules, forwards and attributes are restored exactly (parameters
    are shared, never copied), and what Captum's ``LRP`` leaves on modules (``activations``
    caches) is removed, what it deletes (``module.rule``) is put back.

    Args:
        model (nn.Module): a Hugging Face ``MambaForCausalLM``, ``Mamba2ForCausalLM``,
                    ``FalconMambaForCausalLM``, their backbones, captum_mamba's
                    ``*ForSequenceClassification`` heads, or a module containing one (such as
                    an :class:`~captum_mamba.ExplainedLogits` wrapper), or of a family
                    declared with :func:`~captum_mamba.families.register_family`.
        rules (Mapping, optional): ``{leaf_type: rule}`` pinning Captum rules on the leaves of a
                    type (an instance is copied per leaf). A MambaLRP rule keeps the leaf's
                    modified forward; another rule (e.g. ``GradientRule`` on ``GateProduct``)
                    runs the plain computation: the ablation of that MambaLRP rule. Pinned
                    rules survive Captum's deletion of ``module.rule`` after ``attribute()``.
                    A rule that cannot apply (any rule but ``SelectiveSSMRule`` on the SSM core)
                    raises a ``ValueError``.
        families (FamilyRegistry, optional): the declared model families. Default: the package's.

    Returns:
        *Canonization*: the leaves by path and the residual blocks.

    Raises:
        UnsupportedCanonizationError: for mixers it cannot restructure (e.g. mamba-ssm's) and
                    for leaf modules left without a Captum rule.

    Examples::

        >>> with canonize(model):
        ...     relevance = LRP(ExplainedLogits(model)).attribute(embeds, target=token_id)
    """
    families = families or FAMILIES
    _check_canonizable(model, families)
    edits = ModelEdits()
    captum_attributes = snapshot_captum_attributes(model)
    try:
        with captum_leaf_rules({TokenPooling: GradientRule}):
            blocks = _restructure(model, families, edits)
            if not edits:
                raise UnsupportedCanonizationError(
                    {type(model).__name__: ["<root>"]}, "no module of a declared model family found"
                )
            _check_leaves_have_rules(model)
            leaves = {name: leaf for name, leaf in model.named_modules() if isinstance(leaf, CanonicalLeaf)}
            _pin_rules(leaves, dict(rules or {}))
            yield Canonization(leaves=leaves, blocks=blocks)
    finally:
        edits.undo()
        restore_captum_attributes(captum_attributes)
