r"""The data of the image tasks: scikit-learn's digits, upsampled, and a generated known-mask shapes task.

**digits** (:func:`digits_split`): the 1,797 handwritten digits of scikit-learn's
``load_digits()`` (8 x 8 grey images with values 0..16, shipped inside scikit-learn: nothing is
downloaded; ``pip install 'captum-mamba[vision]'``), upsampled to 32 x 32 with bilinear
interpolation, divided by 16 (values in [0, 1]) and normalised with :data:`DIGITS_MEAN` /
:data:`DIGITS_STD`; a seeded 80/20 train/test split (1,438 / 359 images).

**shapes** (:func:`shapes_dataset`, :func:`shapes_split`): generated 32 x 32 RGB scenes. On a dark
noisy background lie clutter (short strokes and speckled blobs in random colours, never close to
red) and 2 or 3 filled shapes (square, circle, triangle, cross; sides of 8 to 13 pixels; their
bounding boxes do not touch). Exactly one shape is pure red (1, 0, 0), the *target*; the others
are green, blue, yellow, cyan, magenta or white and of any type, the target's included. The label
is the target's type (:data:`SHAPE_NAMES`) and the mask marks exactly the target's pixels, so
the task cannot be solved without looking at the red shape and the mask is the ground truth of
an explanation. Images are normalised with :data:`SHAPES_MEAN` / :data:`SHAPES_STD`. Image ``i``
of ``shapes_dataset(count, seed)`` depends on ``(seed, i)`` only, so a shorter dataset is a
prefix of a longer one.

Both normalisations are fixed constants (the per-channel mean and standard deviation of the
``[0, 1]`` images, measured once and rounded), stored with every :class:`ImageSplit`;
:meth:`ImageSplit.denormalise` undoes them for display.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from captum_mamba.errors import MissingDependencyError

IMAGE_SIZE = 32
"""Height and width of the images of both tasks."""

DIGITS_MEAN: tuple[float] = (0.3053,)
"""Mean of the upsampled ``[0, 1]`` digit images (all 1,797), the normalisation's offset."""
DIGITS_STD: tuple[float] = (0.3236,)
"""Standard deviation of the upsampled ``[0, 1]`` digit images (all 1,797), the normalisation's scale."""
DIGITS_CLASSES: tuple[str, ...] = tuple(str(digit) for digit in range(10))

SHAPE_NAMES: tuple[str, ...] = ("square", "circle", "triangle", "cross")
"""The shape types; the label of a shapes image is the index of its red shape's type."""
TARGET_COLOUR: tuple[float, float, float] = (1.0, 0.0, 0.0)
"""The target shape's colour (pure red); no other pixel of a shapes image has it."""
DISTRACTOR_COLOURS: tuple[tuple[float, float, float], ...] = (
    (0.0, 1.0, 0.0),
    (0.0, 0.0, 1.0),
    (1.0, 1.0, 0.0),
    (0.0, 1.0, 1.0),
    (1.0, 0.0, 1.0),
    (1.0, 1.0, 1.0),
)
"""Colours of the other shapes: green, blue, yellow, cyan, magenta, white."""
SHAPES_MEAN: tuple[float, float, float] = (0.2307, 0.1724, 0.1719)
"""Per-channel mean (R, G, B) of the ``[0, 1]`` shapes images (measured on 4,000 images of seed 0)."""
SHAPES_STD: tuple[float, float, float] = (0.3232, 0.2640, 0.2634)
"""Per-channel standard deviation (R, G, B) of the ``[0, 1]`` shapes images (same sample)."""

_CLUTTER_MIN_RED_DISTANCE = 0.6  # Euclidean RGB distance of every clutter colour from pure red
_BACKGROUND_LEVEL, _BACKGROUND_NOISE = 0.1, 0.04
_DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))  # stroke directions (dy, dx): -, |, \, /


@dataclass(frozen=True)
class ImageSplit:
    r"""
    Normalised images with their labels and, for the shapes task, the target masks.

    Args:
        images (Tensor): normalised images, ``(N, channels, H, W)``, float32.
        labels (Tensor): class indices, ``(N,)``, int64.
        mean (tuple of float): per-channel mean subtracted by the normalisation.
        std (tuple of float): per-channel standard deviation divided by the normalisation.
        masks (Tensor, optional): ``(N, H, W)`` bool, the pixels of the object that decides the
                    label (the shapes task), or ``None``. Default: ``None``
    """

    images: Tensor
    labels: Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    masks: Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def denormalise(self, images: Tensor | None = None) -> Tensor:
        r"""
        Undo the normalisation, for display: ``images * std + mean`` per channel, clamped to ``[0, 1]``.

        Args:
            images (Tensor, optional): normalised images ``(N, channels, H, W)`` (or one image
                        ``(channels, H, W)``). Default: this split's images

        Returns:
            *Tensor* of the same shape with values in ``[0, 1]``.
        """
        images = self.images if images is None else images
        shape = (-1, 1, 1)
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(shape)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(shape)
        return (images * std + mean).clamp(0.0, 1.0)

    def head(self, count: int) -> ImageSplit:
        r"""
        The first ``count`` examples.

        Args:
            count (int): how many (all when larger than the split).

        Returns:
            *ImageSplit* with the same normalisation.
        """
        if count < 0:
            raise ValueError(f"count must be 0 or more, got {count}")
        masks = None if self.masks is None else self.masks[:count]
        return ImageSplit(self.images[:count], self.labels[:count], self.mean, self.std, masks)


class TrainTestSplit(NamedTuple):
    """A task's training and held-out test images."""

    train: ImageSplit
    test: ImageSplit


def normalise(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    r"""
    ``(images - mean) / std`` per channel.

    Args:
        images (Tensor): ``(N, channels, H, W)`` images with values in ``[0, 1]``.
        mean (Sequence[float]): one value per channel.
        std (Sequence[float]): one value per channel.

    Returns:
        *Tensor* of the same shape.
    """
    mean_t = torch.tensor(mean, dtype=images.dtype).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype).view(-1, 1, 1)
    return (images - mean_t) / std_t


# --- digits ---------------------------------------------------------------------------------


def digits_pixels() -> tuple[Tensor, Tensor]:
    r"""
    scikit-learn's digits upsampled to 32 x 32, in ``[0, 1]`` (not normalised), in file order.

    Returns:
        *tuple* ``(images, labels)``: ``(1797, 1, 32, 32)`` float32 and ``(1797,)`` int64.

    Raises:
        MissingDependencyError: if scikit-learn is not installed (``pip install 'captum-mamba[vision]'``).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise MissingDependencyError("scikit-learn", "The digits image task", "vision") from error
    digits = load_digits()
    small = torch.from_numpy(np.asarray(digits.images, dtype=np.float32)).unsqueeze(1) / 16.0
    # bilinear interpolation is a convex combination of neighbours: values stay in [0, 1]
    images = F.interpolate(small, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return images.contiguous(), torch.from_numpy(np.asarray(digits.target, dtype=np.int64))


def digits_split(seed: int = 0, test_fraction: float = 0.2) -> TrainTestSplit:
    r"""
    The digits task: normalised 32 x 32 digit images split reproducibly into training and test images.

    The order is ``torch.randperm(1797, generator=torch.Generator().manual_seed(seed))``; the last
    ``round(test_fraction * 1797)`` images of it form the test split (359 for the default 0.2).

    Args:
        seed (int, optional): seed of the shuffle. Default: 0
        test_fraction (float, optional): held-out share, in ``(0, 1)``. Default: 0.2

    Returns:
        *TrainTestSplit* of :class:`ImageSplit` with ``(N, 1, 32, 32)`` images normalised with
        :data:`DIGITS_MEAN` / :data:`DIGITS_STD`, labels 0..9 and no masks.

    Raises:
        MissingDependencyError: if scikit-learn is not installed.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    pixels, labels = digits_pixels()
    images = normalise(pixels, DIGITS_MEAN, DIGITS_STD)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    cut = len(labels) - round(test_fraction * len(labels))
    parts = (order[:cut], order[cut:])
    train, test = (ImageSplit(images[p].contiguous(), labels[p], DIGITS_MEAN, DIGITS_STD) for p in parts)
    return TrainTestSplit(train, test)


# --- shapes ---------------------------------------------------------------------------------


def shape_template(kind: int, side: int) -> np.ndarray:
    r"""
    The filled pixels of a shape in its ``side x side`` bounding box.

    Args:
        kind (int): index into :data:`SHAPE_NAMES` (square, circle, triangle, cross).
        side (int): bounding-box side in pixels.

    Returns:
        *numpy.ndarray* ``(side, side)`` bool.
    """
    rows, cols = np.mgrid[0:side, 0:side]
    centre = (side - 1) / 2
    name = SHAPE_NAMES[kind]
    if name == "square":
        return np.ones((side, side), dtype=bool)
    if name == "circle":  # a disc of diameter ``side``
        return (rows - centre) ** 2 + (cols - centre) ** 2 <= (side / 2) ** 2
    if name == "triangle":  # apex at the top: row r spans a half-width of (r + 1) / 2 pixels
        return np.abs(cols - centre) <= (rows + 1) / 2
    # cross: a horizontal and a vertical bar of thickness ~side / 3 through the centre
    thickness = max(2, round(side / 3))
    start = (side - thickness) // 2
    band = (rows >= start) & (rows < start + thickness)
    return band | ((cols >= start) & (cols < start + thickness))


def _clutter_colour(rng: np.random.Generator) -> np.ndarray:
    """A random colour at least ``_CLUTTER_MIN_RED_DISTANCE`` away from pure red (rejection sampling)."""
    red = np.asarray(TARGET_COLOUR)
    while True:
        colour = rng.random(3)
        if np.linalg.norm(colour - red) >= _CLUTTER_MIN_RED_DISTANCE:
            return colour


def _draw_clutter(canvas: np.ndarray, rng: np.random.Generator) -> None:
    """Short strokes (3-6 pixels, four directions) and speckled blobs (radius 1-2) in random colours."""
    size = canvas.shape[0]
    for _ in range(int(rng.integers(3, 7))):
        dy, dx = _DIRECTIONS[int(rng.integers(len(_DIRECTIONS)))]
        length = int(rng.integers(3, 7))
        y, x = int(rng.integers(size)), int(rng.integers(size))
        steps = np.arange(length)
        ys, xs = y + dy * steps, x + dx * steps
        inside = (ys >= 0) & (ys < size) & (xs >= 0) & (xs < size)
        canvas[ys[inside], xs[inside]] = _clutter_colour(rng)
    for _ in range(int(rng.integers(1, 4))):
        radius = int(rng.integers(1, 3))
        y, x = int(rng.integers(size)), int(rng.integers(size))
        top, left = max(0, y - radius), max(0, x - radius)
        patch = canvas[top : y + radius + 1, left : x + radius + 1]
        speckle = rng.random(patch.shape[:2]) < 0.6
        patch[speckle] = _clutter_colour(rng)


def _place(sides: list[int], size: int, rng: np.random.Generator) -> list[tuple[int, int]] | None:
    """Top-left corners of boxes of the given sides, pairwise separated by at least one pixel, or None."""
    corners: list[tuple[int, int]] = []
    for side in sides:
        for _ in range(50):
            y, x = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
            # boxes [y, y+side) and [oy, oy+oside) with a one-pixel gap do not overlap
            if all(
                y + side < oy or oy + other < y or x + side < ox or ox + other < x
                for (oy, ox), other in zip(corners, sides)
            ):
                corners.append((y, x))
                break
        else:
            return None
    return corners


def _shapes_image(rng: np.random.Generator, label: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene ``(size, size, 3)`` in ``[0, 1]`` and its target mask ``(size, size)``."""
    canvas = np.clip(rng.normal(_BACKGROUND_LEVEL, _BACKGROUND_NOISE, (size, size, 3)), 0.0, 1.0)
    _draw_clutter(canvas, rng)
    count = int(rng.integers(2, 4))
    kinds = [label] + [int(k) for k in rng.integers(len(SHAPE_NAMES), size=count - 1)]
    low, high = max(4, round(size * 0.25)), max(4, round(size * 0.4))
    sides = [int(s) for s in rng.integers(low, high + 1, size=count)]
    corners = _place(sides, size, rng)
    while corners is None:  # too crowded: shrink the shapes by a pixel and try again
        sides = [max(low, s - 1) for s in sides]
        corners = _place(sides, size, rng)
    mask = np.zeros((size, size), dtype=bool)
    # distractors first, the target last (the boxes do not overlap, so the order is cosmetic)
    for index in list(range(1, count)) + [0]:
        (y, x), side = corners[index], sides[index]
        template = shape_template(kinds[index], side)
        if index == 0:
            colour = np.asarray(TARGET_COLOUR)
            mask[y : y + side, x : x + side] = template
        else:
            colour = np.asarray(DISTRACTOR_COLOURS[int(rng.integers(len(DISTRACTOR_COLOURS)))])
        canvas[y : y + side, x : x + side][template] = colour
    return canvas, mask


def shapes_pixels(count: int, seed: int = 0, size: int = IMAGE_SIZE) -> tuple[Tensor, Tensor, Tensor]:
    r"""
    Generated shapes scenes in ``[0, 1]`` (not normalised); see the module's description.

    Image ``i`` is drawn with ``numpy.random.default_rng([seed, i])``, so it does not depend on ``count``.

    Args:
        count (int): number of images.
        seed (int, optional): non-negative seed. Default: 0
        size (int, optional): height and width (the shapes' sides scale with it). Default: 32

    Returns:
        *tuple* ``(images, labels, masks)``: ``(count, 3, size, size)`` float32, ``(count,)``
        int64 (index into :data:`SHAPE_NAMES`) and ``(count, size, size)`` bool.
    """
    if count < 0 or seed < 0:
        raise ValueError(f"count and seed must be 0 or more, got count={count}, seed={seed}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    images = np.empty((count, size, size, 3), dtype=np.float32)
    masks = np.empty((count, size, size), dtype=bool)
    labels = np.empty(count, dtype=np.int64)
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        labels[i] = rng.integers(len(SHAPE_NAMES))
        images[i], masks[i] = _shapes_image(rng, int(labels[i]), size)
    return (
        torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(labels),
        torch.from_numpy(masks),
    )


def shapes_dataset(count: int, seed: int = 0, size: int = IMAGE_SIZE) -> ImageSplit:
    r"""
    The shapes task: ``count`` generated scenes, normalised, with labels and target masks.

    Args:
        count (int): number of images (10,000 take a few seconds).
        seed (int, optional): non-negative seed; image ``i`` depends on ``(seed, i)`` only. Default: 0
        size (int, optional): height and width, at least 16. Default: 32

    Returns:
        *ImageSplit* with ``(count, 3, size, size)`` images normalised with :data:`SHAPES_MEAN` /
        :data:`SHAPES_STD`, labels indexing :data:`SHAPE_NAMES` and ``(count, size, size)``
        bool masks of the red target shape.
    """
    pixels, labels, masks = shapes_pixels(count, seed, size)
    return ImageSplit(normalise(pixels, SHAPES_MEAN, SHAPES_STD), labels, SHAPES_MEAN, SHAPES_STD, masks)


def shapes_split(seed: int = 0, train_size: int = 8000, test_size: int = 1000) -> TrainTestSplit:
    r"""
    Training and test scenes of the shapes task from separate seeds: ``shapes_dataset(train_size,
    2 * seed)`` and ``shapes_dataset(test_size, 2 * seed + 1)``.

    Args:
        seed (int, optional): non-negative seed. Default: 0
        train_size (int, optional): training images. Default: 8000
        test_size (int, optional): test images. Default: 1000

    Returns:
        *TrainTestSplit* of :class:`ImageSplit`.
    """
    return TrainTestSplit(shapes_dataset(train_size, 2 * seed), shapes_dataset(test_size, 2 * seed + 1))


__all__ = [
    "DIGITS_CLASSES",
    "DIGITS_MEAN",
    "DIGITS_STD",
    "DISTRACTOR_COLOURS",
    "IMAGE_SIZE",
    "SHAPES_MEAN",
    "SHAPES_STD",
    "SHAPE_NAMES",
    "TARGET_COLOUR",
    "ImageSplit",
    "TrainTestSplit",
    "digits_pixels",
    "digits_split",
    "normalise",
    "shape_template",
    "shapes_dataset",
    "shapes_pixels",
    "shapes_split",
]
