"""captum_mamba: MambaLRP, Layer-wise Relevance Propagation for Mamba models, for Captum.

The public names are imported on first access (PEP 562), so that ``import captum_mamba.cli``
(and ``captum-mamba --help``) does not import torch. The installed transformers release is
checked against the tested range on that first access, and when any submodule but the command
line is imported, as the package import itself did before.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_REGISTRY",
    "FAMILIES",
    "ExplainedLogits",
    "ModelFamily",
    "register_family",
    "BambaForSequenceClassification",
    "FalconMambaForSequenceClassification",
    "Mamba2ForSequenceClassification",
    "TokenTargets",
    "last_token_positions",
    "LayerMambaLRP",
    "MambaForSequenceClassification",
    "MambaLLMAttribution",
    "MambaLRP",
    "MissingDependencyError",
    "ModelNotFoundError",
    "RulePlan",
    "RuleRegistry",
    "UnsupportedModuleError",
    "canonize",
    "mamba_lrp_rules",
    "plan_rules",
    "register_rule",
    "VisionMamba",
    "load_vim_checkpoint",
    "patch_relevance",
    "SignedGammaRule",
    "BoundedInputRule",
    "relevance_split",
]

_SOURCES: dict[str, str] = {
    "DEFAULT_REGISTRY": "captum_mamba.registry",
    "FAMILIES": "captum_mamba.families",
    "ExplainedLogits": "captum_mamba.explained_logits",
    "ModelFamily": "captum_mamba.families",
    "register_family": "captum_mamba.families",
    "BambaForSequenceClassification": "captum_mamba.heads",
    "FalconMambaForSequenceClassification": "captum_mamba.heads",
    "Mamba2ForSequenceClassification": "captum_mamba.heads",
    "TokenTargets": "captum_mamba.targets",
    "last_token_positions": "captum_mamba.targets",
    "LayerMambaLRP": "captum_mamba.layer_mamba_lrp",
    "MambaForSequenceClassification": "captum_mamba.heads",
    "MambaLLMAttribution": "captum_mamba.llm",
    "MambaLRP": "captum_mamba.mamba_lrp",
    "MissingDependencyError": "captum_mamba.errors",
    "ModelNotFoundError": "captum_mamba.errors",
    "RulePlan": "captum_mamba.rule_context",
    "RuleRegistry": "captum_mamba.registry",
    "UnsupportedModuleError": "captum_mamba.errors",
    "canonize": "captum_mamba.canonizers",
    "mamba_lrp_rules": "captum_mamba.rule_context",
    "plan_rules": "captum_mamba.rule_context",
    "register_rule": "captum_mamba.registry",
    "VisionMamba": "captum_mamba.models",
    "load_vim_checkpoint": "captum_mamba.models",
    "patch_relevance": "captum_mamba.image_relevance",
    "SignedGammaRule": "captum_mamba.rules.gamma",
    "BoundedInputRule": "captum_mamba.rules.bounded",
    "relevance_split": "captum_mamba.relevance_split",
}
"""Where each public name lives."""

_LIGHT_SUBMODULES = frozenset({"cli"})
"""Submodules whose import runs no check (they import torch and transformers only when run)."""

if TYPE_CHECKING:  # the same names, statically, for type checkers and the API documentation
    from captum_mamba.canonizers import canonize
    from captum_mamba.errors import MissingDependencyError, ModelNotFoundError, UnsupportedModuleError
    from captum_mamba.explained_logits import ExplainedLogits
    from captum_mamba.families import FAMILIES, ModelFamily, register_family
    from captum_mamba.heads import (
        BambaForSequenceClassification,
        FalconMambaForSequenceClassification,
        Mamba2ForSequenceClassification,
        MambaForSequenceClassification,
    )
    from captum_mamba.image_relevance import patch_relevance
    from captum_mamba.layer_mamba_lrp import LayerMambaLRP
    from captum_mamba.llm import MambaLLMAttribution
    from captum_mamba.mamba_lrp import MambaLRP
    from captum_mamba.models import VisionMamba, load_vim_checkpoint
    from captum_mamba.registry import DEFAULT_REGISTRY, RuleRegistry, register_rule
    from captum_mamba.relevance_split import relevance_split
    from captum_mamba.rule_context import RulePlan, mamba_lrp_rules, plan_rules
    from captum_mamba.rules.bounded import BoundedInputRule
    from captum_mamba.rules.gamma import SignedGammaRule
    from captum_mamba.targets import TokenTargets, last_token_positions


def _check() -> None:
    from captum_mamba.compat import check_transformers_version  # warns once (cached)

    check_transformers_version()


def __getattr__(name: str) -> Any:
    """Import a public name, or a submodule, on first access."""
    if name in _SOURCES:
        _check()
        value = getattr(importlib.import_module(_SOURCES[name]), name)
        globals()[name] = value
        return value
    if not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """The package module: binding an imported submodule but the command line to it runs the check.

    A submodule named after the public object it defines (``captum_mamba.relevance_split``, home of
    the function ``relevance_split``) does not replace that object when it is imported: the
    package's ``relevance_split`` stays the function.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        is_module = isinstance(value, types.ModuleType)
        if is_module and _SOURCES.get(name) == value.__name__ and hasattr(value, name):
            super().__setattr__(name, getattr(value, name))
        else:
            super().__setattr__(name, value)
        if is_module and name not in _LIGHT_SUBMODULES and name != "compat":
            _check()


sys.modules[__name__].__class__ = _Package
