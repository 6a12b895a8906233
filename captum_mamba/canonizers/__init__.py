"""Canonizers: restructure Mamba models into leaf modules so Captum's own LRP engine explains them.

Importing this package enters the leaf types with their rules in Captum's
``SUPPORTED_LAYERS_WITH_RULES`` (only these types; Captum's torch-layer defaults stay as they are).
"""

from captum_mamba.canonizers.context import Canonization, UnsupportedCanonizationError, canonize
from captum_mamba.canonizers.leaf_modules import (
    LEAF_TYPES,
    CanonicalLeaf,
    CausalDepthwiseConv,
    FanOut,
    GateProduct,
    HeldConstant,
    LinearLeaf,
    ResidualAdd,
    RMSNormLeaf,
    SelectiveSSMCore,
    SiLULeaf,
    TokenEmbedding,
    TokenPooling,
    register_with_captum,
)
from captum_mamba.canonizers.rules import BlockRelevance, HeldConstantRule, TokenEmbeddingRule

register_with_captum()

__all__ = [
    "LEAF_TYPES",
    "BlockRelevance",
    "CanonicalLeaf",
    "Canonization",
    "CausalDepthwiseConv",
    "FanOut",
    "GateProduct",
    "HeldConstant",
    "HeldConstantRule",
    "LinearLeaf",
    "RMSNormLeaf",
    "ResidualAdd",
    "SelectiveSSMCore",
    "SiLULeaf",
    "TokenEmbedding",
    "TokenEmbeddingRule",
    "TokenPooling",
    "UnsupportedCanonizationError",
    "canonize",
    "register_with_captum",
]
