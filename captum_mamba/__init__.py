"""captum_mamba: MambaLRP, Layer-wise Relevance Propagation for Mamba models, for Captum."""

from captum_mamba.canonizers import canonize
from captum_mamba.compat import check_transformers_version
from captum_mamba.errors import MissingDependencyError, ModelNotFoundError, UnsupportedModuleError
from captum_mamba.explained_logits import ExplainedLogits
from captum_mamba.families import FAMILIES, ModelFamily, register_family
from captum_mamba.heads import (
    FalconMambaForSequenceClassification,
    Mamba2ForSequenceClassification,
    MambaForSequenceClassification,
)
from captum_mamba.layer_mamba_lrp import LayerMambaLRP
from captum_mamba.llm import MambaLLMAttribution
from captum_mamba.mamba_lrp import MambaLRP
from captum_mamba.registry import DEFAULT_REGISTRY, RuleRegistry, register_rule
from captum_mamba.rule_context import RulePlan, mamba_lrp_rules, plan_rules
from captum_mamba.targets import TokenTargets, last_token_positions

check_transformers_version()

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_REGISTRY",
    "FAMILIES",
    "ExplainedLogits",
    "ModelFamily",
    "register_family",
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
]
