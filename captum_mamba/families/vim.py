"""Vision Mamba (Vim): the package's own model definition (:mod:`captum_mamba.models.vim`)."""

from __future__ import annotations

from captum_mamba.families.declaration import ModelFamily
from captum_mamba.mixers.layouts import BidirectionalMamba1Layout
from captum_mamba.models import vim
from captum_mamba.rules.block import BlockRule
from captum_mamba.rules.gamma import SignedGammaRule
from captum_mamba.rules.norm import RMSNormRule

#: The patch-embedding convolution reads the pixels: LRP-γ (γ = 0.25, the paper's vision setting).
PIXEL_RULE = SignedGammaRule(gamma=0.25)

VIM = ModelFamily(
    name="vim",
    mixers={vim.VimMamba: BidirectionalMamba1Layout()},
    norms={vim.VimRMSNorm: RMSNormRule},
    blocks={vim.Block: BlockRule()},
    containers=(vim.VisionMamba, vim.PatchEmbed, vim.DropPath),
    rules={vim.PatchProjection: PIXEL_RULE},
    canonizable=False,
)
