"""``canonize(model)``: restructure a Mamba model into leaves for Captum's LRP, reversibly."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from captum.attr._core import lrp as captum_lrp
from captum.attr._utils.lrp_rules import PropagationRule
from torch import nn

from captum_mamba.canonizers.edits import ModelEdits, restore_captum_attributes, snapshot_captum_attributes
from captum_mamba.canonizers.hf_mamba import CANONIZERS
from captum_mamba.canonizers.leaf_modules import CanonicalLeaf
from captum_mamba.errors import UnsupportedModuleError
from captum_mamba.models.hf_common import MixerRule
from captum_mamba.registry import DEFAULT_REGISTRY

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


def _check_canonizable(model: nn.Module) -> None:
    modules = list(model.named_modules())
    if any(isinstance(module, CanonicalLeaf) for _, module in modules):
        raise ValueError("the model is already canonized (nested canonize)")
    other_mixers = [
        (name, module)
        for name, module in modules
        if type(module) not in CANONIZERS and isinstance(DEFAULT_REGISTRY.lookup(type(module)), MixerRule)
    ]
    if other_mixers:
        raise UnsupportedCanonizationError(
            _paths_by_type(other_mixers),
            "canonize restructures the Hugging Face Mamba, Mamba2 and FalconMamba mixers only (causal LMs, "
            "backbones, captum_mamba's sequence classifiers); explain this mixer with captum_mamba.MambaLRP",
        )


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
        for leaf in leaves.values():
            if isinstance(leaf, leaf_type):
                leaf.rule = copy.deepcopy(rule) if isinstance(rule, PropagationRule) else rule()


@contextmanager
def canonize(
    model: nn.Module,
    rules: Mapping[type[nn.Module], RuleChoice] | None = None,
) -> Iterator[Canonization]:
    r"""
    Restructure a Hugging Face Mamba model into leaf modules for Captum's own ``LRP`` and
    ``LayerLRP``, for the duration of a ``with`` block (zennit calls this a canonizer).

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
                    an :class:`~captum_mamba.evaluation.methods.ExplainedLogits` wrapper).
        rules (Mapping, optional): ``{leaf_type: rule}`` pinning Captum rules on the leaves of a
                    type (an instance is copied per leaf). A MambaLRP rule keeps the leaf's
                    modified forward; another rule (e.g. ``GradientRule`` on ``GateProduct``)
                    runs the plain computation: the ablation of that MambaLRP rule. Pinned
                    rules survive Captum's deletion of ``module.rule`` after ``attribute()``.

    Returns:
        *Canonization*: the leaves by path and the residual blocks.

    Raises:
        UnsupportedCanonizationError: for mixers it cannot restructure (e.g. mamba-ssm's) and
                    for leaf modules left without a Captum rule.

    Examples::

        >>> with canonize(model):
        ...     relevance = LRP(ExplainedLogits(model)).attribute(embeds, target=token_id)
    """
    _check_canonizable(model)
    edits = ModelEdits()
    captum_attributes = snapshot_captum_attributes(model)
    try:
        blocks = []
        for _, module in list(model.named_modules()):
            canonize_module = CANONIZERS.get(type(module))
            if canonize_module is not None:
                canonize_module(module, edits)
                if isinstance(getattr(module, "residual_add", None), nn.Module):
                    blocks.append(module)
        if not edits:
            raise UnsupportedCanonizationError(
                {type(model).__name__: ["<root>"]}, "no Hugging Face Mamba, Mamba2 or FalconMamba modules found"
            )
        _check_leaves_have_rules(model)
        leaves = {name: leaf for name, leaf in model.named_modules() if isinstance(leaf, CanonicalLeaf)}
        _pin_rules(leaves, dict(rules or {}))
        yield Canonization(leaves=leaves, blocks=blocks)
    finally:
        edits.undo()
        restore_captum_attributes(captum_attributes)
