"""MambaLRP propagation rules, one module per component kind."""

from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule, EpsilonRule, GammaRule, IdentityRule

from captum_mamba.rules.activation import SigmoidIdentityRule, SquaredReLUIdentityRule
from captum_mamba.rules.attention import AttentionRule
from captum_mamba.rules.base import MambaLRPRule
from captum_mamba.rules.block import BlockRule, OwnForwardRule
from captum_mamba.rules.bounded import BoundedInputRule
from captum_mamba.rules.delta import GatedDeltaRule
from captum_mamba.rules.gamma import SignedGammaRule
from captum_mamba.rules.gate import GateHalfRule, ShortConvGateRule, SigmoidGateRule
from captum_mamba.rules.gelu import GELUIdentityRule
from captum_mamba.rules.linear import GradientRule, rule_forward
from captum_mamba.rules.mixer import MixerRule
from captum_mamba.rules.mlp import GatedMLPRule, MLPRule
from captum_mamba.rules.moe import ExpertsRule, MoEBlockRule
from captum_mamba.rules.norm import GatedRMSNormRule, LayerNormRule, RMSNormRule
from captum_mamba.rules.silu import SiLUIdentityRule
from captum_mamba.rules.ssm import SelectiveSSMRule

__all__ = [
    "AttentionRule",
    "GatedMLPRule",
    "Alpha1_Beta0_Rule",
    "BlockRule",
    "BoundedInputRule",
    "MixerRule",
    "OwnForwardRule",
    "EpsilonRule",
    "ExpertsRule",
    "GammaRule",
    "GateHalfRule",
    "GatedDeltaRule",
    "GELUIdentityRule",
    "GatedRMSNormRule",
    "GradientRule",
    "IdentityRule",
    "LayerNormRule",
    "MLPRule",
    "MoEBlockRule",
    "MambaLRPRule",
    "RMSNormRule",
    "SelectiveSSMRule",
    "ShortConvGateRule",
    "SigmoidGateRule",
    "SigmoidIdentityRule",
    "SignedGammaRule",
    "SiLUIdentityRule",
    "SquaredReLUIdentityRule",
    "rule_forward",
]
