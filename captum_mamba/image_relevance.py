"""Image relevance maps: per pixel as Captum returns them, per patch as Vision Mamba reads them."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def patch_relevance(relevance: Tensor, patch_size: int | tuple[int, int]) -> Tensor:
    r"""
    The relevance of each (non-overlapping) patch: the sum over its pixels and the channels.
    For a bias-free patch projection under LRP-γ this is the relevance of the patch's embedding.

    Args:
        relevance (Tensor): pixel relevances ``(batch, channels, height, width)``.
        patch_size (int or tuple): the patch height and width (``model.patch_embed.patch_size``).

    Returns:
        *Tensor* ``(batch, height // patch, width // patch)``.

    Raises:
        ValueError: if the image is not a whole number of patches.
    """
    if relevance.dim() != 4:
        raise ValueError(
            f"expected pixel relevances (batch, channels, height, width), got shape {tuple(relevance.shape)}"
        )
    high, wide = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
    if relevance.shape[-2] % high or relevance.shape[-1] % wide:
        raise ValueError(
            f"a {tuple(relevance.shape[-2:])} image is not a whole number of {high} x {wide} patches; "
            "pass the model's patch size"
        )
    return F.avg_pool2d(relevance.sum(1, keepdim=True), (high, wide)).squeeze(1) * (high * wide)
