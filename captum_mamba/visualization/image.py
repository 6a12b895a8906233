"""Image relevance maps: a PNG figure (the image, the heatmap with its colour legend, the patch grid)
and a self-contained HTML page of explained images.

Pixel relevances ``(channels, height, width)``, as :class:`~captum_mamba.MambaLRP` returns them
per image, are summed over the channels and drawn on the package's diverging scale (blue, white,
red; :data:`~captum_mamba.visualization.heatmap.RELEVANCE_CMAP`, the same as matplotlib's
``bwr``), centred at zero with symmetric limits. Figures are bare :class:`matplotlib.figure.Figure`
objects rendered with the Agg canvas: pyplot's global state is never touched.

Example::

    >>> relevance, delta = MambaLRP(model).attribute(images, target=labels, return_convergence_delta=True)
    >>> write_image_heatmap_png("heatmap.png", display[0], relevance[0], title="digit 3", patch_size=4)
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from captum_mamba.visualization.colors import COLOR_MEANING
from captum_mamba.visualization.heatmap import RELEVANCE_CMAP, HeatmapFigure, wrap_title

#: The label of the colour bar next to every image heatmap.
IMAGE_COLORBAR_LABEL = "relevance"

#: The colour of the outline of a known object mask.
MASK_COLOR = (0, 200, 0)


def _numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # a torch tensor, without importing torch here
        array = array.detach().cpu().double().numpy()
    return np.asarray(array, dtype=np.float64)


def to_captum_layout(tensor: Any) -> np.ndarray:
    r"""
    An image or a relevance map in the layout of Captum's ``visualize_image_attr``: ``(height, width, channels)``.

    Args:
        tensor (Tensor or np.ndarray): ``(channels, height, width)``, or ``(1, channels, height,
                    width)`` (one example of a batch), as images and relevances are in PyTorch.

    Returns:
        *np.ndarray* ``(height, width, channels)`` of float64.

    Examples::

        >>> from captum.attr import visualization
        >>> figure, _ = visualization.visualize_image_attr(
        ...     to_captum_layout(relevance[0]), to_captum_layout(display[0]), method="blended_heat_map",
        ...     sign="all", show_colorbar=True, use_pyplot=False)
    """
    array = _numpy(tensor)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise ValueError(
            f"expected one image (channels, height, width) or a batch of one, got shape {tuple(array.shape)}"
        )
    return np.ascontiguousarray(array.transpose(1, 2, 0))


def relevance_map(relevance: Any) -> np.ndarray:
    r"""
    The relevance of each pixel: the sum over the channels.

    Args:
        relevance (Tensor or np.ndarray): ``(channels, height, width)``, ``(1, channels, height,
                    width)`` or already ``(height, width)``.

    Returns:
        *np.ndarray* ``(height, width)`` of float64.
    """
    array = _numpy(relevance)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3:
        return array.sum(0)
    if array.ndim == 2:
        return array
    raise ValueError(f"expected pixel relevances (channels, height, width), got shape {tuple(array.shape)}")


def display_array(image: Any) -> np.ndarray:
    r"""
    An image ready for ``imshow``: ``(height, width)`` for one channel, ``(height, width, 3)`` for
    RGB (other channel counts are averaged to grey), clipped to ``[0, 1]``.

    Args:
        image (Tensor or np.ndarray): ``(channels, height, width)`` (or a batch of one) with values
                    in ``[0, 1]`` (e.g. ``samples.denormalise(images)[i]``), or ``(height, width)``.

    Returns:
        *np.ndarray* of float64.
    """
    array = _numpy(image)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3:
        array = array.transpose(1, 2, 0) if array.shape[0] == 3 else array.mean(0)
    elif array.ndim != 2:
        raise ValueError(f"expected an image (channels, height, width), got shape {tuple(array.shape)}")
    return np.clip(array, 0.0, 1.0)


def symmetric_limit(values: Any) -> float:
    r"""
    The colour limit of a heatmap centred at zero: the largest ``|value|`` (1.0 when all are zero).

    Args:
        values (Tensor or np.ndarray): the relevances.

    Returns:
        *float*.
    """
    array = _numpy(values)
    finite = array[np.isfinite(array)]
    largest = float(np.abs(finite).max()) if finite.size else 0.0
    return largest if largest > 0 else 1.0


def patch_sums(relevance: Any, patch_size: int) -> np.ndarray:
    r"""
    The relevance of each non-overlapping ``patch_size`` x ``patch_size`` patch: the sum over its
    pixels and channels (as :func:`captum_mamba.patch_relevance`, for one image, in numpy).

    Args:
        relevance (Tensor or np.ndarray): pixel relevances ``(channels, height, width)`` or ``(height, width)``.
        patch_size (int): the model's patch size.

    Returns:
        *np.ndarray* ``(height // patch_size, width // patch_size)``.
    """
    pixels = relevance_map(relevance)
    high, wide = pixels.shape
    if patch_size < 1 or high % patch_size or wide % patch_size:
        raise ValueError(f"a {high} x {wide} image is not a whole number of {patch_size} x {patch_size} patches")
    return pixels.reshape(high // patch_size, patch_size, wide // patch_size, patch_size).sum((1, 3))


def _mask_array(mask: Any, shape: tuple[int, int]) -> np.ndarray | None:
    if mask is None:
        return None
    array = _numpy(mask)
    while array.ndim > 2:  # (1, height, width), or a mask per channel: any channel marks the object
        array = array.max(0)
    if array.shape != shape:
        raise ValueError(f"the mask has shape {tuple(array.shape)}; expected the image's {shape}")
    return array > 0.5


def _colorbar(figure: Figure, axis: Any, mappable: Any, label: str) -> None:
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    slot = make_axes_locatable(axis).append_axes("right", size="6%", pad=0.08)
    if mappable is None:
        slot.axis("off")
        return
    colorbar = figure.colorbar(mappable, cax=slot)
    colorbar.set_label(label, fontsize=8)
    colorbar.ax.tick_params(labelsize=7)


def image_heatmap_figure(
    image: Any,
    relevance: Any,
    title: str = "",
    patch_size: int | None = None,
    mask: Any = None,
    limit: float | None = None,
) -> Figure:
    r"""
    The image, its pixel relevance heatmap with a colour bar labelled "relevance", and (with
    ``patch_size``) the relevance of each patch, side by side.

    The heatmap is the channel sum of ``relevance`` on a diverging scale centred at zero, red for
    evidence toward the explained class, blue against, with symmetric limits ``±limit``. A known
    object ``mask`` is outlined on every panel.

    Args:
        image (Tensor or np.ndarray): the image as shown, ``(channels, height, width)`` in ``[0, 1]``.
        relevance (Tensor or np.ndarray): pixel relevances ``(channels, height, width)``.
        title (str, optional): the heading, wrapped at phrase boundaries. Default: ""
        patch_size (int, optional): the model's (non-overlapping) patch size; adds the patch view.
                    Default: None
        mask (Tensor or np.ndarray, optional): ``(height, width)`` object mask, outlined. Default: None
        limit (float, optional): the colour limit of the pixel heatmap. Default: the largest
                    ``|relevance|`` of a pixel.

    Returns:
        *Figure*: a bare matplotlib figure (no pyplot); save it with :func:`figure_png` or
        ``figure.savefig``. Its axes are the image, the heatmap, its colour bar, then the patch
        view and its colour bar.
    """
    shown = display_array(image)
    pixels = relevance_map(relevance)
    if shown.shape[:2] != pixels.shape:
        raise ValueError(f"the image is {shown.shape[:2]} pixels but the relevances are {pixels.shape}")
    outline = _mask_array(mask, pixels.shape)
    limit = symmetric_limit(pixels) if limit is None else float(limit)
    panels = 3 if patch_size else 2
    title_lines = wrap_title(title, 22 * panels) if title else []
    top = 0.12 + 0.2 * len(title_lines)
    figure = HeatmapFigure(figsize=(3.4 * panels, 3.2 + top))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    figure.subplots_adjust(left=0.02, right=0.94, bottom=0.03, top=1 - top / (3.2 + top), wspace=0.3)
    if title_lines:
        figure.suptitle("\n".join(title_lines), fontsize=9)
    high, wide = pixels.shape
    # the image
    axes[0].imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
    axes[0].set_title("image", fontsize=8)
    _colorbar(figure, axes[0], None, "")  # an empty slot of the colour bars' width: the panels keep one size
    # the pixel heatmap
    heat = axes[1].imshow(pixels, cmap=RELEVANCE_CMAP, norm=Normalize(-limit, limit), interpolation="nearest")
    axes[1].set_title(f"pixel relevance (sum {pixels.sum():+.4g})", fontsize=8)
    _colorbar(figure, axes[1], heat, IMAGE_COLORBAR_LABEL)
    if patch_size:
        patches = patch_sums(pixels, patch_size)
        patch_limit = symmetric_limit(patches)
        # pixel coordinates, so that the grid and the mask outline line up with the other panels
        extent = (-0.5, wide - 0.5, high - 0.5, -0.5)
        grid = axes[2].imshow(
            patches,
            cmap=RELEVANCE_CMAP,
            norm=Normalize(-patch_limit, patch_limit),
            extent=extent,
            interpolation="nearest",
        )
        for edge in range(0, wide + 1, patch_size):
            axes[2].axvline(edge - 0.5, color="#888", linewidth=0.4)
        for edge in range(0, high + 1, patch_size):
            axes[2].axhline(edge - 0.5, color="#888", linewidth=0.4)
        if patches.size <= 64:
            for (row, column), value in np.ndenumerate(patches):
                axes[2].text(
                    column * patch_size + (patch_size - 1) / 2,
                    row * patch_size + (patch_size - 1) / 2,
                    f"{value:.2g}",
                    ha="center",
                    va="center",
                    fontsize=5.5,
                    color="#fff" if abs(value) > 0.6 * patch_limit else "#222",
                )
        axes[2].set_title(f"{patch_size} x {patch_size} patches", fontsize=8)
        _colorbar(figure, axes[2], grid, f"{IMAGE_COLORBAR_LABEL} per patch")
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
        if outline is not None:
            axis.contour(
                outline.astype(float), levels=[0.5], colors=[tuple(c / 255 for c in MASK_COLOR)], linewidths=1.0
            )
        axis.set_xlim(-0.5, wide - 0.5)
        axis.set_ylim(high - 0.5, -0.5)
    return figure


def figure_png(figure: Figure, dpi: int = 110) -> bytes:
    r"""
    A figure as PNG bytes, drawn with the Agg canvas (pyplot untouched).

    Args:
        figure (Figure): e.g. from :func:`image_heatmap_figure`.
        dpi (int, optional): resolution. Default: 110

    Returns:
        *bytes*.
    """
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.08)
    return buffer.getvalue()


def write_image_heatmap_png(
    path: str | Path,
    image: Any,
    relevance: Any,
    title: str = "",
    patch_size: int | None = None,
    mask: Any = None,
    dpi: int = 110,
) -> Path:
    r"""
    Write :func:`image_heatmap_figure` as a PNG file.

    Args:
        path (str or Path): the output file (its folder is created).
        image (Tensor or np.ndarray): the image as shown, ``(channels, height, width)`` in ``[0, 1]``.
        relevance (Tensor or np.ndarray): pixel relevances ``(channels, height, width)``.
        title (str, optional): the heading. Default: ""
        patch_size (int, optional): adds the patch view. Default: None
        mask (Tensor or np.ndarray, optional): object mask, outlined. Default: None
        dpi (int, optional): resolution. Default: 110

    Returns:
        *Path*: the written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = image_heatmap_figure(image, relevance, title=title, patch_size=patch_size, mask=mask)
    path.write_bytes(figure_png(figure, dpi=dpi))
    return path


def _upscale(array: np.ndarray, factor: int) -> np.ndarray:
    return array.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else array


def _outline(rgb: np.ndarray, mask: np.ndarray | None, factor: int) -> np.ndarray:
    if mask is None:
        return rgb
    inside = _upscale(mask, factor)
    padded = np.pad(inside, 1, mode="constant", constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    rgb = rgb.copy()
    rgb[inside & ~interior] = MASK_COLOR
    return rgb


def heatmap_rgb(relevance: Any, limit: float | None = None, scale: int = 1, mask: Any = None) -> np.ndarray:
    r"""
    A relevance heatmap as an RGB array (no figure): channel sums on the diverging scale centred
    at zero with limits ``±limit``, each pixel repeated ``scale`` times, the mask outlined.

    Args:
        relevance (Tensor or np.ndarray): ``(channels, height, width)`` or ``(height, width)``.
        limit (float, optional): the colour limit. Default: the largest ``|relevance|``.
        scale (int, optional): pixel repetition (nearest-neighbour upscaling). Default: 1
        mask (Tensor or np.ndarray, optional): ``(height, width)`` object mask. Default: None

    Returns:
        *np.ndarray* ``(height * scale, width * scale, 3)`` of uint8.
    """
    pixels = relevance_map(relevance)
    limit = symmetric_limit(pixels) if limit is None else float(limit)
    colours = RELEVANCE_CMAP(Normalize(-limit, limit, clip=True)(pixels))[..., :3]
    rgb = _upscale(np.round(colours * 255).astype(np.uint8), scale)
    return _outline(rgb, _mask_array(mask, pixels.shape), scale)


def image_rgb(image: Any, scale: int = 1, mask: Any = None) -> np.ndarray:
    r"""
    An image as an RGB array: grey images repeated over three channels, each pixel repeated
    ``scale`` times, the mask outlined.

    Args:
        image (Tensor or np.ndarray): ``(channels, height, width)`` in ``[0, 1]``.
        scale (int, optional): pixel repetition. Default: 1
        mask (Tensor or np.ndarray, optional): ``(height, width)`` object mask. Default: None

    Returns:
        *np.ndarray* ``(height * scale, width * scale, 3)`` of uint8.
    """
    shown = display_array(image)
    if shown.ndim == 2:
        shown = np.repeat(shown[..., None], 3, axis=2)
    rgb = _upscale(np.round(shown * 255).astype(np.uint8), scale)
    return _outline(rgb, _mask_array(mask, shown.shape[:2]), scale)


def rgb_png(rgb: np.ndarray) -> bytes:
    r"""
    An RGB array ``(height, width, 3)`` of uint8 as PNG bytes.

    Args:
        rgb (np.ndarray): e.g. from :func:`heatmap_rgb` or :func:`image_rgb`.

    Returns:
        *bytes*.
    """
    from matplotlib import image as mpimage

    buffer = io.BytesIO()
    mpimage.imsave(buffer, np.ascontiguousarray(rgb), format="png")
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    r"""
    PNG bytes as a ``data:`` URI, for an ``<img src=...>`` that needs no file.

    Args:
        png (bytes): the PNG file's bytes.

    Returns:
        *str*.
    """
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def display_scale(size: int, target: int = 128) -> int:
    r"""
    The pixel repetition that shows a ``size``-pixel image at about ``target`` pixels (at least 1).

    Args:
        size (int): the image's larger side in pixels.
        target (int, optional): the wanted size in pixels. Default: 128

    Returns:
        *int*.
    """
    return max(1, math.ceil(target / max(size, 1)))


@dataclass
class ImageExplanation:
    r"""
    One explained image, for :func:`image_report_html`.

    Args:
        title (str): a heading, e.g. the file name.
        image (Tensor or np.ndarray): the image as shown, ``(channels, height, width)`` in ``[0, 1]``.
        relevance (Tensor or np.ndarray): pixel relevances ``(channels, height, width)``.
        predicted (str): the predicted class.
        explained (str): the explained class.
        logit (float): the explained logit.
        relevance_sum (float): the sum of all relevances.
        delta (float or None): the convergence delta (``relevance_sum - logit``); None when not defined.
        probability (float, optional): the model's probability of the explained class.
        label (str, optional): the true class, when known.
        method (str): the attribution method's display name. Default: "MambaLRP"
        patch_size (int, optional): adds the patch view to the figure.
        mask (Tensor or np.ndarray, optional): the known object mask, outlined.
        png (bytes, optional): the rendered figure; drawn by :func:`image_report_html` when None.
        file (str, optional): the PNG's file name next to the page, linked from it.
    """

    title: str
    image: Any
    relevance: Any
    predicted: str
    explained: str
    logit: float
    relevance_sum: float
    delta: float | None
    probability: float | None = None
    label: str | None = None
    method: str = "MambaLRP"
    patch_size: int | None = None
    mask: Any = None
    png: bytes | None = None
    file: str | None = None

    def figure_png(self) -> bytes:
        """The heatmap figure as PNG bytes (rendered once, then kept in ``png``)."""
        if self.png is None:
            figure = image_heatmap_figure(
                self.image, self.relevance, title=self.title, patch_size=self.patch_size, mask=self.mask
            )
            self.png = figure_png(figure)
        return self.png


def _facts(entry: ImageExplanation) -> str:
    rows = [("method", entry.method), ("predicted class", entry.predicted)]
    if entry.label is not None:
        rows.append(("true class", entry.label))
    explained = entry.explained
    if entry.probability is not None:
        explained += f" (p = {entry.probability:.3f})"
    rows += [
        ("explained class", explained),
        ("explained logit", f"{entry.logit:+.4f}"),
        ("sum of relevances", f"{entry.relevance_sum:+.4f}"),
        ("convergence delta", "–" if entry.delta is None else f"{entry.delta:+.2e}"),
    ]
    return "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)


def image_report_html(entries: Sequence[ImageExplanation], heading: str = "MambaLRP image explanations") -> str:
    r"""
    One self-contained HTML page of explained images: per image its title, the heatmap figure
    (embedded as base64 PNG, with its colour legend), the predicted and explained class, the
    explained logit, the sum of relevances and the convergence delta.

    Args:
        entries (Sequence[ImageExplanation]): the explained images.
        heading (str, optional): the page heading. Default: "MambaLRP image explanations"

    Returns:
        *str*: a complete HTML document with no external resources.
    """
    sections = []
    for entry in entries:
        link = f' <a href="{html.escape(entry.file)}">PNG</a>' if entry.file else ""
        sections.append(
            f'<section class="explained-image"><h2>{html.escape(entry.title)}{link}</h2>'
            f'<div class="row"><img src="{png_data_uri(entry.figure_png())}" alt="{html.escape(entry.title)}: '
            f'image and relevance heatmap">'
            f'<table class="facts">{_facts(entry)}</table></div></section>'
        )
    body = "\n".join(sections) or "<p>No images.</p>"
    mask_note = " The known object mask is outlined in green." if any(e.mask is not None for e in entries) else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(heading)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #1d2330; }}
section {{ border-top: 1px solid #dde1e8; padding-top: 0.6em; margin-bottom: 1.2em; }}
h2 {{ font-size: 1.05em; }}
h2 a {{ font-size: 0.8em; font-weight: normal; }}
.row {{ display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }}
.row img {{ max-width: 100%; }}
.facts th {{ text-align: left; font-weight: normal; color: #555; padding-right: 1em; }}
.facts td {{ font-variant-numeric: tabular-nums; }}
.legend {{ font-size: 0.9em; color: #333; }}
</style></head><body>
<h1>{html.escape(heading)}</h1>
<p class="legend">Relevance heatmaps: {html.escape(COLOR_MEANING)}; each heatmap is scaled to its own largest
|relevance| (the colour bar gives the values). The convergence delta is the sum of relevances minus the explained
logit (0 = exact conservation).{mask_note}</p>
{body}
</body></html>
"""
