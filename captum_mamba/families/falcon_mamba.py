"""Hugging Face ``transformers`` FalconMamba: Mamba-1 with weightless RMSNorms on ``dt``, ``B``, ``C``.

Its tiny test configuration (``config``) and ``random_config`` are Mamba's sizes.
"""

from __future__ import annotations

from typing import Any

from transformers import FalconMambaConfig
from transformers.models.falcon_mamba import modeling_falcon_mamba

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.families.mamba import TINY_SETTINGS, random_config
from captum_mamba.heads import FalconMambaForSequenceClassification
from captum_mamba.mixers.layouts import NormalisedSelectionLayout
from captum_mamba.rules.block import BlockRule
from captum_mamba.rules.linear import GradientRule
from captum_mamba.rules.norm import RMSNormRule


def tiny_config(**overrides: Any) -> FalconMambaConfig:
    """A tiny bias-free FalconMamba configuration for tests (Mamba's sizes, vocabulary of 40)."""
    return FalconMambaConfig(**{**TINY_SETTINGS, **overrides})


FALCON_MAMBA = ModelFamily(
    name="falcon_mamba",
    mixers={modeling_falcon_mamba.FalconMambaMixer: NormalisedSelectionLayout()},
    norms={
        modeling_falcon_mamba.FalconMambaRMSNorm: RMSNormRule,
        # on the held-constant selection path (dt, B, C): no relevance flows through it
        modeling_falcon_mamba.FalconMambaWeightlessRMSNorm: GradientRule,
    },
    blocks={modeling_falcon_mamba.FalconMambaBlock: BlockRule()},
    containers=(
        modeling_falcon_mamba.FalconMambaModel,
        modeling_falcon_mamba.FalconMambaForCausalLM,
        FalconMambaForSequenceClassification,
    ),
    causal_lm=modeling_falcon_mamba.FalconMambaForCausalLM,
    classifier=FalconMambaForSequenceClassification,
    config=tiny_config,
    random_config=random_config,
)
