"""Evaluating explanations: attribution methods by name (baselines and ablations), faithfulness."""

from captum_mamba.evaluation.methods import (
    METHODS,
    RULE_COMPONENTS,
    ExplainedLogits,
    MethodSpec,
    ablated_rules,
    embedding_attributions,
    get_method,
    register_method,
    token_attributions,
)

__all__ = [
    "METHODS",
    "RULE_COMPONENTS",
    "ExplainedLogits",
    "MethodSpec",
    "ablated_rules",
    "embedding_attributions",
    "get_method",
    "register_method",
    "token_attributions",
]
