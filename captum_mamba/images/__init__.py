"""Image tasks for Vision Mamba explanations: data, training and two shipped tiny Vim classifiers.

Two tasks, each with a small :class:`~captum_mamba.models.vim.VisionMamba` trained on CPU and
shipped under ``captum_mamba/images/assets/<task>/`` (``config.json``, ``model.safetensors``,
``metrics.json``, ``MODEL_CARD.md``):

* ``"digits"``: scikit-learn's 8 x 8 handwritten digits, upsampled to 32 x 32 (10 classes);
* ``"shapes"``: synthetic 32 x 32 RGB scenes with clutter and 2-3 shapes, exactly one of them
  pure red; the label is the red shape's type (4 classes) and its pixel mask is known, so an
  explanation can be scored against the ground truth.

Example::

    >>> from captum_mamba import MambaLRP
    >>> from captum_mamba.images.tasks import load_image_model, sample_images
    >>> model = load_image_model("shapes")
    >>> batch = sample_images("shapes", count=4)
    >>> relevance = MambaLRP(model).attribute(batch.images, target=batch.labels)  # (4, 3, 32, 32)

The data need scikit-learn for the digits (``pip install 'captum-mamba[vision]'``); the shapes are
generated with numpy alone. Nothing is downloaded.
"""

from __future__ import annotations

from captum_mamba.images.data import ImageSplit, TrainTestSplit, digits_split, shapes_dataset, shapes_split
from captum_mamba.images.tasks import IMAGE_TASKS, class_names, load_image_model, sample_images

__all__ = [
    "IMAGE_TASKS",
    "ImageSplit",
    "TrainTestSplit",
    "class_names",
    "digits_split",
    "load_image_model",
    "sample_images",
    "shapes_dataset",
    "shapes_split",
]
