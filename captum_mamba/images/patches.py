"""Patches of a Vision Mamba's input: geometry, relevance per patch, and cutting images into patches."""

from __future__ import annotations

from torch import Tensor, nn

from captum_mamba.image_relevance import patch_relevance as _summed_patches


def patch_geometry(model: nn.Module) -> tuple[tuple[int, int], tuple[int, int]]:
    r"""
    The patch size and patch grid of a Vision Mamba.

    Args:
        model (nn.Module): a model with ``patch_embed.patch_size``, ``.grid_size`` and ``.stride``.

    Returns:
        *tuple* ``((patch_height, patch_width), (grid_height, grid_width))``.

    Raises:
        ValueError: for overlapping patches (stride other than the patch size), which a patch
                    relevance or a patch flip cannot separate.
    """
    embed = model.patch_embed
    patch = tuple(int(p) for p in embed.patch_size)
    stride = getattr(embed, "stride", patch)
    stride = tuple(int(s) for s in (stride if isinstance(stride, (tuple, list)) else (stride, stride)))
    if stride != patch:
        raise ValueError(
            f"patch evaluation needs non-overlapping patches; the model has patch {patch}, stride {stride}"
        )
    return patch, tuple(int(g) for g in embed.grid_size)  # type: ignore[return-value]


def patch_relevance(pixel_relevance: Tensor, patch_size: tuple[int, int], grid_size: tuple[int, int]) -> Tensor:
    r"""
    The relevance of each patch: the sum over its pixels.

    Args:
        pixel_relevance (Tensor): ``(batch, height, width)``.
        patch_size (tuple[int, int]): ``(patch_height, patch_width)``.
        grid_size (tuple[int, int]): ``(grid_height, grid_width)``; pixels right of or below the
                    grid (which the patch embedding never reads) are left out.

    Returns:
        *Tensor* ``(batch, grid_height, grid_width)``.
    """
    (ph, pw), (gh, gw) = patch_size, grid_size
    return _summed_patches(pixel_relevance[:, None, : gh * ph, : gw * pw], (ph, pw))


def upsample_patches(patch_scores: Tensor, patch_size: tuple[int, int], image_size: tuple[int, int]) -> Tensor:
    r"""
    Spread patch scores over their pixels: each pixel gets its patch's score divided by the
    patch's area, so that :func:`patch_relevance` gives the scores back.

    Args:
        patch_scores (Tensor): ``(batch, grid_height, grid_width)``.
        patch_size (tuple[int, int]): ``(patch_height, patch_width)``.
        image_size (tuple[int, int]): ``(height, width)``; pixels outside the grid get 0.

    Returns:
        *Tensor* ``(batch, height, width)``.
    """
    (ph, pw), (height, width) = patch_size, image_size
    pixels = patch_scores.repeat_interleave(ph, dim=1).repeat_interleave(pw, dim=2) / (ph * pw)
    out = pixels.new_zeros(patch_scores.shape[0], height, width)
    out[:, : pixels.shape[1], : pixels.shape[2]] = pixels
    return out


def images_to_patches(images: Tensor, patch_size: tuple[int, int], grid_size: tuple[int, int]) -> Tensor:
    r"""
    Cut images into their patches, in the patch embedding's (raster) order.

    Args:
        images (Tensor): ``(batch, channels, height, width)``.
        patch_size (tuple[int, int]): ``(patch_height, patch_width)``.
        grid_size (tuple[int, int]): ``(grid_height, grid_width)``.

    Returns:
        *Tensor* ``(batch, grid_height * grid_width, channels * patch_height * patch_width)``.
    """
    (ph, pw), (gh, gw) = patch_size, grid_size
    batch, channels = images.shape[:2]
    covered = images[:, :, : gh * ph, : gw * pw].reshape(batch, channels, gh, ph, gw, pw)
    return covered.permute(0, 2, 4, 1, 3, 5).reshape(batch, gh * gw, channels * ph * pw)


def patches_to_images(
    patches: Tensor, patch_size: tuple[int, int], grid_size: tuple[int, int], image_size: tuple[int, int]
) -> Tensor:
    r"""
    The inverse of :func:`images_to_patches` (pixels outside the grid, unread by the model, are 0).

    Args:
        patches (Tensor): ``(batch, grid_height * grid_width, channels * patch_height * patch_width)``.
        patch_size (tuple[int, int]): ``(patch_height, patch_width)``.
        grid_size (tuple[int, int]): ``(grid_height, grid_width)``.
        image_size (tuple[int, int]): ``(height, width)``.

    Returns:
        *Tensor* ``(batch, channels, height, width)``.
    """
    (ph, pw), (gh, gw) = patch_size, grid_size
    batch = patches.shape[0]
    channels = patches.shape[-1] // (ph * pw)
    grid = patches.reshape(batch, gh, gw, channels, ph, pw).permute(0, 3, 1, 4, 2, 5)
    images = patches.new_zeros(batch, channels, *image_size)
    images[:, :, : gh * ph, : gw * pw] = grid.reshape(batch, channels, gh * ph, gw * pw)
    return images
