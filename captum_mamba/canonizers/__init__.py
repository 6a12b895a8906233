"""Canonizers: restructure Mamba models into leaf modules so Captum's own LRP engine explains them.

:func:`canonize` enters the leaf types with their rules in Captum's ``SUPPORTED_LAYERS_WITH_RULES``
for the duration of its ``with`` block (Captum's own entries stay as they are); importing this
package changes nothing.
"""

from captum_mamba.canonizers.canonize import Canonization, UnsupportedCanonizationError, canonize
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
    captum_leaf_rules,
)
from captum_mamba.canonizers.leaf_rules import BlockRelevance, HeldConstantRule, TokenEmbeddingRule
from captum_mamba.canonizers.structure import LeafOps

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
    "LeafOps",
    "UnsupportedCanonizationError",
    "canonize",
    "captum_leaf_rules",
]
