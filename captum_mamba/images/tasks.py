r"""The image tasks by name: the shipped Vim models, held-out sample images and class names.

``IMAGE_TASKS`` lists the tasks; :func:`load_image_model` loads a task's shipped
:class:`~captum_mamba.models.vim.VisionMamba` (offline, eval mode), :func:`sample_images` gives
its first held-out test images (with target masks for ``"shapes"``) and :func:`class_names`
the names of its classes.

Example::

    >>> from captum_mamba.images.tasks import class_names, load_image_model, sample_images
    >>> model = load_image_model("digits")
    >>> batch = sample_images("digits", count=8)
    >>> [class_names("digits")[i] for i in model(batch.images).argmax(-1)]
"""

from __future__ import annotations

from pathlib import Path

from captum_mamba.images.data import DIGITS_CLASSES, SHAPE_NAMES, ImageSplit, TrainTestSplit
from captum_mamba.models.vim import VisionMamba

IMAGE_TASKS: tuple[str, ...] = ("digits", "shapes")
"""The image tasks, each with a shipped model under ``captum_mamba/images/assets/<task>/``."""

ASSETS_DIR: Path = Path(__file__).resolve().parent / "assets"
"""Folder of the shipped models: ``assets/<task>/`` holds ``config.json``, ``model.safetensors``,
``metrics.json`` and ``MODEL_CARD.md``."""

SHAPES_TEST_SIZE = 1000
"""Test images of the shapes task (``shapes_split(seed, train_size, SHAPES_TEST_SIZE).test``)."""
DIGITS_TEST_SIZE = 359
"""Test images of the digits task (20% of 1,797, rounded)."""


def check_task(task: str) -> str:
    r"""
    ``task`` if it is one of :data:`IMAGE_TASKS`.

    Args:
        task (str): the task's name.

    Returns:
        *str*: ``task``.

    Raises:
        ValueError: naming the known tasks.
    """
    if task not in IMAGE_TASKS:
        raise ValueError(f"unknown image task {task!r}; choose one of {', '.join(IMAGE_TASKS)}")
    return task


def task_split(task: str, seed: int = 0, train_size: int | None = None) -> TrainTestSplit:
    r"""
    The training and test images of a task, as the shipped models were trained and evaluated.

    Args:
        task (str): ``"digits"`` or ``"shapes"``.
        seed (int, optional): seed of the split (digits) or of the generator (shapes). Default: 0
        train_size (int, optional): training scenes of the shapes task (the digits split is fixed).
                    Default: 8000

    Returns:
        *TrainTestSplit*.
    """
    from captum_mamba.images.data import digits_split, shapes_split

    if check_task(task) == "digits":
        return digits_split(seed)
    return shapes_split(seed, train_size=8000 if train_size is None else train_size, test_size=SHAPES_TEST_SIZE)


def task_test_split(task: str, seed: int = 0) -> ImageSplit:
    r"""
    The held-out test images of a task (``task_split(task, seed).test``, without making the training images).

    Args:
        task (str): ``"digits"`` or ``"shapes"``.
        seed (int, optional): seed of the split (digits) or of the generator (shapes). Default: 0

    Returns:
        *ImageSplit*: 359 digits, or 1,000 shapes scenes with their masks.
    """
    from captum_mamba.images.data import digits_split, shapes_dataset

    if check_task(task) == "digits":
        return digits_split(seed).test
    # shapes_split(seed).test is shapes_dataset(test_size, 2 * seed + 1)
    return shapes_dataset(SHAPES_TEST_SIZE, seed=2 * seed + 1)


def load_image_model(task: str) -> VisionMamba:
    r"""
    A task's shipped Vision Mamba classifier, loaded offline from ``captum_mamba/images/assets/<task>/``.

    Args:
        task (str): ``"digits"`` (10 classes, 1 x 32 x 32 images) or ``"shapes"`` (4 classes,
                    3 x 32 x 32 images).

    Returns:
        *VisionMamba* in eval mode, on CPU, float32.

    Raises:
        ValueError: for an unknown task (the message names the known ones).
    """
    return VisionMamba.from_pretrained(ASSETS_DIR / check_task(task)).eval()


def sample_images(task: str, count: int = 8) -> ImageSplit:
    r"""
    Held-out images of a task: the first ``count`` images of its test split (always the same ones).

    Args:
        task (str): ``"digits"`` or ``"shapes"``.
        count (int, optional): number of images (at most the test split's 359 digits or 1,000
                    scenes). Default: 8

    Returns:
        *ImageSplit*: normalised images, labels and, for ``"shapes"``, the target masks.

    Raises:
        ValueError: for an unknown task or a ``count`` below 1 or above the test split's size.
    """
    from captum_mamba.images.data import shapes_dataset

    check_task(task)
    limit = SHAPES_TEST_SIZE if task == "shapes" else DIGITS_TEST_SIZE
    if not 1 <= count <= limit:
        raise ValueError(f"count must lie in 1..{limit} for the {task} task, got {count}")
    if task == "shapes":
        # the test scenes are shapes_dataset(SHAPES_TEST_SIZE, seed=2 * 0 + 1), and image i of a
        # shapes dataset depends on (seed, i) only: the first ones need not draw the others
        return shapes_dataset(count, seed=1)
    return task_test_split(task).head(count)


def class_names(task: str) -> list[str]:
    r"""
    The names of a task's classes, indexed by the model's logits.

    Args:
        task (str): ``"digits"`` or ``"shapes"``.

    Returns:
        *list[str]*: ``"0"`` .. ``"9"`` for digits; ``"square"``, ``"circle"``, ``"triangle"``,
        ``"cross"`` for shapes.

    Raises:
        ValueError: for an unknown task.
    """
    return list(DIGITS_CLASSES if check_task(task) == "digits" else SHAPE_NAMES)


__all__ = [
    "ASSETS_DIR",
    "IMAGE_TASKS",
    "DIGITS_TEST_SIZE",
    "SHAPES_TEST_SIZE",
    "check_task",
    "class_names",
    "load_image_model",
    "sample_images",
    "task_split",
    "task_test_split",
]
