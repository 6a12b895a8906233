"""Evaluating explanations: attribution methods by name (baselines and ablations), faithfulness."""

from captum_mamba.evaluation.methods import (
    METHODS,
    RULE_COMPONENTS,
    ExplainedLogits,
    MethodNotApplicableError,
    MethodSpec,
    ablated_rules,
    attention_rules,
    check_applicable,
    embedding_attributions,
    get_method,
    register_method,
    token_attributions,
)

__all__ = [
    "METHODS",
    "RULE_COMPONENTS",
    "ExplainedLogits",
    "MethodNotApplicableError",
    "MethodSpec",
    "ablated_rules",
    "attention_rules",
    "check_applicable",
    "embedding_attributions",
    "get_method",
    "register_method",
    "token_attributions",
]
