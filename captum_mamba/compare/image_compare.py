"""The image comparison: attribution methods side by side on images, as one self-contained HTML page.

Each row of the page is an image: its prediction, the image itself, then one heatmap per method
with its relevance sum, convergence delta (sum minus the explained logit) and runtime. The
known object mask, when there is one, is outlined on the image and on every heatmap. The page
uses the comparison view's style sheet (``static/compare.css``).

Example::

    >>> examples = compare_images(model, images, ["mamba_lrp", "integrated_gradients"])
    >>> write_image_comparison("compare.html", examples, "my Vim")
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from captum_mamba.images.methods import (
    COMPARED_IMAGE_METHODS,
    IMAGE_METHODS,
    attribute_images,
    check_image_methods,
)
from captum_mamba.visualization.colors import COLOR_MEANING
from captum_mamba.visualization.image import (
    display_scale,
    heatmap_rgb,
    image_rgb,
    png_data_uri,
    relevance_map,
    rgb_png,
    symmetric_limit,
)


@dataclass
class ImageMethodRow:
    r"""
    One method's explanation of one image.

    Args:
        name (str): registry name (``"mamba_lrp"``).
        label (str): display name (``"MambaLRP"``).
        description (str): one line on the method.
        relevance (np.ndarray or None): ``(height, width)`` channel-summed relevances (None if the method failed).
        total (float or None): the sum of the relevances.
        delta (float or None): sum minus the explained logit; None for methods that are not additive.
        seconds (float): attribution wall time.
        error (str or None): why the method could not explain this image.
    """

    name: str
    label: str
    description: str
    relevance: np.ndarray | None = None
    total: float | None = None
    delta: float | None = None
    seconds: float = 0.0
    error: str | None = None


@dataclass
class ImageExample:
    r"""
    One image explained by several methods.

    Args:
        name (str): e.g. the file name or ``"shapes #3"``.
        image (np.ndarray): the image as shown, ``(channels, height, width)`` in ``[0, 1]``.
        mask (np.ndarray or None): ``(height, width)`` known object mask.
        label (str or None): the true class, when known.
        prediction (dict): ``index``, ``name``, ``probability`` and ``logit`` of the predicted (explained) class.
        rows (list[ImageMethodRow]): one per method, in the order asked.
    """

    name: str
    image: np.ndarray
    mask: np.ndarray | None
    label: str | None
    prediction: dict[str, Any]
    rows: list[ImageMethodRow] = field(default_factory=list)


def _channel_mask(masks: Any, index: int) -> np.ndarray | None:
    if masks is None:
        return None
    mask = masks[index]
    mask = mask.detach().cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
    while mask.ndim > 2:
        mask = mask.any(0)  # a mask per channel: any channel marks the object
    return mask.astype(bool)


def compare_images(
    model: nn.Module,
    images: Tensor,
    methods: Sequence[str] = COMPARED_IMAGE_METHODS,
    labels: Sequence[int | None] | Tensor | None = None,
    class_names: Sequence[str] | None = None,
    display: Tensor | None = None,
    masks: Tensor | np.ndarray | None = None,
    names: Sequence[str] | None = None,
    gamma: float | None = None,
) -> list[ImageExample]:
    r"""
    Explain a classifier's prediction on each image with several methods of
    :data:`~captum_mamba.images.methods.IMAGE_METHODS`, side by side.

    Args:
        model (nn.Module): the classifier (e.g. a :class:`~captum_mamba.models.vim.VisionMamba`), in eval mode.
        images (Tensor): ``(batch, channels, height, width)``, normalised as the model expects.
        methods (Sequence[str], optional): the method names. Default: :data:`COMPARED_IMAGE_METHODS`
        labels (Sequence[int] or Tensor, optional): the true classes, shown next to the prediction.
        class_names (Sequence[str], optional): class names by index. Default: the indices.
        display (Tensor, optional): the images as shown, ``[0, 1]``, same shape as ``images``.
                    Default: each image rescaled to ``[0, 1]``.
        masks (Tensor or np.ndarray, optional): ``(batch, height, width)`` object masks, outlined.
        names (Sequence[str], optional): a name per image. Default: ``"image 1"``, ...
        gamma (float, optional): γ of MambaLRP's pixel rule. Default: 0.25

    Returns:
        *list[ImageExample]*, one per image; a method that fails on an image keeps its error in its row.

    Raises:
        ValueError: an unknown method, or arguments whose lengths do not match the images.
    """
    methods = check_image_methods(list(methods))
    if images.dim() != 4:
        raise ValueError(f"expected images (batch, channels, height, width), got shape {tuple(images.shape)}")
    count = len(images)
    for what, given in (("labels", labels), ("display images", display), ("masks", masks), ("names", names)):
        if given is not None and len(given) != count:
            raise ValueError(f"{len(given)} {what} for {count} images")
    if display is None:
        low = images.flatten(1).min(1).values[:, None, None, None]
        high = images.flatten(1).max(1).values[:, None, None, None]
        display = (images - low) / (high - low).clamp_min(1e-12)

    def class_name(index: int) -> str:
        return class_names[index] if class_names is not None and index < len(class_names) else str(index)

    examples = []
    for index in range(count):
        image = images[index : index + 1]
        first = attribute_images(model, image, methods[0], gamma=gamma if methods[0] == "mamba_lrp" else None)
        target = int(first.predicted[0])
        label = None if labels is None or labels[index] is None else class_name(int(labels[index]))
        example = ImageExample(
            name=names[index] if names is not None else f"image {index + 1}",
            image=display[index].detach().cpu().double().numpy(),
            mask=_channel_mask(masks, index),
            label=label,
            prediction={
                "index": target,
                "name": class_name(target),
                "probability": float(first.probabilities[0]),
                "logit": float(first.logits[0]),
            },
        )
        for position, name in enumerate(methods):
            spec = IMAGE_METHODS[name]
            row = ImageMethodRow(name, spec.label, spec.description)
            try:
                result = (
                    first
                    if position == 0
                    else attribute_images(
                        model, image, name, target=target, gamma=gamma if name == "mamba_lrp" else None
                    )
                )
            except Exception as error:  # one failing method must not hide the others
                row.error = f"{type(error).__name__}: {error}"
            else:
                row.relevance = relevance_map(result.relevance[0])
                row.total = float(result.sums[0])
                row.delta = None if result.deltas is None else float(result.deltas[0])
                row.seconds = result.seconds
            example.rows.append(row)
        examples.append(example)
    return examples


def _signed(value: float | None, digits: str) -> str:
    return "&ndash;" if value is None else format(value, "+" + digits)


def _runtime(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _cell(row: ImageMethodRow, mask: np.ndarray | None) -> str:
    attributes = f'class="method-cell" data-method="{html.escape(row.name)}"'
    if row.error is not None or row.relevance is None:
        return f'<td {attributes}><div class="row-error">{html.escape(row.error or "no relevances")}</div></td>'
    limit = symmetric_limit(row.relevance)
    png = rgb_png(heatmap_rgb(row.relevance, limit, display_scale(max(row.relevance.shape)), mask))
    caption = (
        f'<span class="sum">&Sigma; {_signed(row.total, ".4f")}</span> &middot; '
        f'<span class="delta" title="sum of relevances minus the explained logit">&Delta; {_signed(row.delta, ".2e")}'
        f"</span><br>&plusmn;{limit:.3g} at full colour &middot; {_runtime(row.seconds)}"
    )
    return (
        f'<td {attributes}><img class="pixels" src="{png_data_uri(png)}" '
        f'alt="{html.escape(row.label)} heatmap"><div class="caption">{caption}</div></td>'
    )


def _example_row(example: ImageExample) -> str:
    prediction = example.prediction
    verdict = ""
    if example.label is not None:
        state = "correct" if example.label == prediction["name"] else "wrong"
        verdict = f'<br>label: <span class="{state}">{html.escape(example.label)}</span>'
    info = (
        f'<td class="example"><strong>{html.escape(example.name)}</strong><br>'
        f'prediction: <strong class="predicted-class">{html.escape(prediction["name"])}</strong> '
        f"(p = {prediction['probability']:.3f})<br>logit {prediction['logit']:+.4f}{verdict}</td>"
    )
    size = max(example.image.shape[-2:])
    picture = rgb_png(image_rgb(example.image, display_scale(size), example.mask))
    image = (
        f'<td class="image"><img class="pixels" src="{png_data_uri(picture)}" alt="{html.escape(example.name)}"></td>'
    )
    cells = "".join(_cell(row, example.mask) for row in example.rows)
    return f'<tr class="example-row">{info}{image}{cells}</tr>'


_EXTRA_CSS = """
img.pixels { image-rendering: pixelated; image-rendering: crisp-edges; width: 128px; height: auto; display: block; }
td.method-cell, td.image { width: 140px; }
.caption { font-size: 11px; color: #333; margin-top: 3px; font-variant-numeric: tabular-nums; line-height: 1.4; }
td.example { min-width: 150px; }
.correct { color: #1a7f37; }
.wrong { color: #b42318; }
.bar { display: inline-block; width: 16em; height: 0.9em; vertical-align: middle; border: 1px solid #ccc;
  background: linear-gradient(to right, rgb(0,0,255), rgb(255,255,255), rgb(255,0,0)); }
"""


def render_image_comparison(
    examples: Sequence[ImageExample], model_name: str, heading: str = "Compare attribution methods on images"
) -> str:
    r"""
    The comparison page: one row per image, its prediction, the image and each method's heatmap
    with the relevance sum, the convergence delta and the runtime.

    Args:
        examples (Sequence[ImageExample]): from :func:`compare_images`.
        model_name (str): shown in the header.
        heading (str, optional): the page heading. Default: "Compare attribution methods on images"

    Returns:
        *str*: the HTML document, with no external resources.
    """
    css = resources.files("captum_mamba.compare").joinpath("static", "compare.css").read_text(encoding="utf-8")
    methods: dict[str, ImageMethodRow] = {}
    for example in examples:
        for row in example.rows:
            methods.setdefault(row.name, row)
    head = "".join(
        f'<th title="{html.escape(row.description)}">{html.escape(row.label)}</th>' for row in methods.values()
    )
    masks = any(example.mask is not None for example in examples)
    mask_note = " The known object mask is outlined in green." if masks else ""
    rows = "\n".join(_example_row(example) for example in examples)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>captum_mamba: {html.escape(heading.lower())}</title>
<style>{css}{_EXTRA_CSS}</style>
</head>
<body>
<header>
  <h1>{html.escape(heading)}</h1>
  <p id="model-name">{html.escape(model_name)} &middot; {len(examples)} image(s) &middot; explaining the predicted class</p>
</header>
<main>
  <section>
    <h2>Legend</h2>
    <p style="font-size:13px">&minus;max |R| <span class="bar"></span> +max |R| &nbsp; relevance
    ({html.escape(COLOR_MEANING)}); each heatmap is scaled to its own largest |relevance| (given under it).
    &Sigma;: sum of the relevances; &Delta;: that sum minus the explained logit (0 = conservation).{mask_note}</p>
  </section>
  <section>
    <h2>Explanations</h2>
    <table id="rows">
      <thead><tr><th>example</th><th>image</th>{head}</tr></thead>
      <tbody>
{rows}
      </tbody>
    </table>
  </section>
</main>
<footer>captum_mamba comparison view. Methods from <code>captum_mamba.images.methods.IMAGE_METHODS</code>.</footer>
</body>
</html>
"""


def write_image_comparison(
    path: str | Path,
    examples: Sequence[ImageExample],
    model_name: str,
    heading: str = "Compare attribution methods on images",
) -> Path:
    r"""
    Write :func:`render_image_comparison` to ``path`` (its folder is created).

    Args:
        path (str or Path): the HTML file.
        examples (Sequence[ImageExample]): from :func:`compare_images`.
        model_name (str): shown in the header.
        heading (str, optional): the page heading. Default: "Compare attribution methods on images"

    Returns:
        *Path*: the written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_image_comparison(examples, model_name, heading), encoding="utf-8")
    return path


__all__ = [
    "ImageExample",
    "ImageMethodRow",
    "compare_images",
    "render_image_comparison",
    "write_image_comparison",
]
