"""Evaluation of image explanations of Vision Mamba classifiers: methods, patch flipping, known-mask metrics.

* **Methods** (:data:`IMAGE_METHODS`, :func:`image_attributions`): MambaLRP, naive LRP (MambaLRP
  with the SiLU, SSM and gate rules of the mixers switched off; the norm rule and the patch
  projection's LRP-gamma rule stay), Gradient x Input, Integrated Gradients, SmoothGrad, attention
  rollout over Vim's hidden attention (:mod:`captum_mamba.images.rollout`) and a random control.
  Every method gives a pixel relevance ``(batch, height, width)`` (summed over the colour
  channels) and a patch relevance ``(batch, grid_height, grid_width)`` (summed over each
  patch's pixels).
* **Patch flipping** (:func:`patch_flipping`): the image analogue of token flipping
  (:mod:`captum_mamba.evaluation.flipping`), computed by that module's
  :func:`~captum_mamba.evaluation.flipping.deletion_curves` with the patches as the tokens, so
  these conventions are *the same* as for text: patches are ordered by signed relevance (MoRF:
  largest first; LeRF: smallest first; stable sort, ties in raster order); step ``k`` of
  ``steps`` replaces ``round(k / steps * n)`` of the ``n`` patches; the curve is the explained
  class's *logit*; areas are trapezoidal over the fraction axis ``[0, 1]``; and
  ``ΔA^F = A_LeRF - A_MoRF`` (higher is better). *Different* from text: the curves are divided by
  the absolute unperturbed logit ``|f(x)|`` (so they start at 1 when ``f(x) > 0``, and a negative
  logit does not turn the curves upside down), making areas comparable across images; the raw
  ΔA^F in logit units is reported as well (``delta_af_raw``). A flipped patch is replaced by the
  baseline, by default the value 0 in every channel: the *normalised-zero image*, which for
  inputs normalised as ``(pixel - mean) / std`` is the data set's mean colour.
* **Known-mask metrics** (Arras, Osman and Samek, "CLEVR-XAI", 2022), on the pixel relevance and
  a ground-truth mask of the object: the *pointing game* (1 when the pixel of maximal relevance
  lies inside the mask, else 0), *relevance-mass accuracy* (positive relevance inside the mask
  divided by all positive relevance) and *relevance-rank accuracy* (of the ``K`` most relevant
  pixels, ``K`` the mask's size, the fraction inside the mask).
* **Runner and report** (:func:`evaluate_images`, :func:`image_table`, :func:`image_markdown`,
  :func:`plot_heatmap_grid`, :func:`write_image_report`): per method the mean and standard error
  over images of every metric, written as JSON with provenance, Markdown and a heatmap grid PNG.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from captum_mamba.evaluation.flipping import deletion_curves  # noqa: E402
from captum_mamba.images.methods import (  # noqa: E402
    EVALUATED_IMAGE_METHODS,
    IMAGE_METHODS,
    ImageMethodSpec,
    check_image_methods,
)
from captum_mamba.images.patches import (  # noqa: E402
    images_to_patches,
    patch_geometry,
    patch_relevance,
    patches_to_images,
)

Baseline = float | Sequence[float] | Tensor
Explained = Literal["prediction", "label"]


class ImageSplit(Protocol):
    """What :func:`evaluate_images` reads from a sample of images (``captum_mamba.images.tasks.sample_images``)."""

    images: Tensor  # (N, C, H, W), normalised
    labels: Tensor  # (N,) long
    masks: Tensor | None  # (N, H, W) bool, or None

    def denormalise(self, images: Tensor) -> Tensor: ...


# --------------------------------------------------------------------------------------------
# methods


def image_attributions(
    method: str | ImageMethodSpec, model: nn.Module, images: Tensor, target: Tensor | int
) -> tuple[Tensor, Tensor]:
    r"""
    Pixel and patch relevance of ``method`` for ``target`` on a batch of images.

    Args:
        method (str or ImageMethodSpec): a name of :data:`IMAGE_METHODS` or a spec.
        model (nn.Module): a :class:`~captum_mamba.models.vim.VisionMamba` (``(batch, classes)`` logits).
        images (Tensor): ``(batch, channels, height, width)``, normalised as the model expects.
        target (Tensor or int): the explained class, one per image or one for all.

    Returns:
        *tuple* ``(pixel, patch)``: ``(batch, height, width)`` (summed over the channels) and
        ``(batch, grid_height, grid_width)`` (summed over each patch's pixels), detached.
    """
    if isinstance(method, str):
        check_image_methods([method])
        method = IMAGE_METHODS[method]
    if images.dim() != 4:
        raise ValueError(f"images must be (batch, channels, height, width), got shape {tuple(images.shape)}")
    if isinstance(target, int):
        target = torch.full((images.shape[0],), target, dtype=torch.long, device=images.device)
    inputs = images.detach().requires_grad_(images.is_floating_point())  # Captum's gradient methods expect it
    relevance = method.explain(model, inputs, target.to(images.device)).detach()
    pixel = relevance.sum(1) if relevance.dim() == 4 else relevance
    patch_size, grid_size = patch_geometry(model)
    return pixel, patch_relevance(pixel, patch_size, grid_size)


# --------------------------------------------------------------------------------------------
# patch flipping


@dataclass
class PatchFlipping:
    r"""
    Patch-flipping curves of one explanation method, per image.

    Args:
        fractions (list[float]): the x-axis, ``0, 1/steps, ..., 1`` (fraction of patches flipped).
        morf (Tensor): ``(batch, steps + 1)`` explained logits, most relevant patches flipped first.
        lerf (Tensor): the same, least relevant first.
    """

    fractions: list[float]
    morf: Tensor
    lerf: Tensor

    @property
    def unperturbed(self) -> Tensor:
        """The explained logit of the intact image ``f(x)``, per image."""
        return self.morf[:, 0]

    def normalised(self, curves: Tensor) -> Tensor:
        """``curves / |f(x)|`` (``|f(x)|`` clamped at 1e-12)."""
        return curves / self.unperturbed.abs().clamp(min=1e-12)[:, None]

    def area(self, curves: Tensor) -> Tensor:
        """Trapezoidal area of each curve over the fraction axis ``[0, 1]``."""
        return torch.trapezoid(curves, torch.tensor(self.fractions, dtype=curves.dtype, device=curves.device), dim=-1)

    @property
    def area_morf(self) -> Tensor:
        """Area under the normalised MoRF curve, per image (lower is better)."""
        return self.area(self.normalised(self.morf))

    @property
    def area_lerf(self) -> Tensor:
        """Area under the normalised LeRF curve, per image (higher is better)."""
        return self.area(self.normalised(self.lerf))

    @property
    def delta_af(self) -> Tensor:
        """ΔA^F = A_LeRF - A_MoRF of the normalised curves, per image (higher is better)."""
        return self.area_lerf - self.area_morf

    @property
    def delta_af_raw(self) -> Tensor:
        """ΔA^F of the curves in logit units (the text evaluation's scale), per image."""
        return self.area(self.lerf) - self.area(self.morf)

    @staticmethod
    def concatenate(results: Sequence[PatchFlipping]) -> PatchFlipping:
        """Stack the images of several results with the same fractions."""
        if len({tuple(r.fractions) for r in results}) != 1:
            raise ValueError("results with different fraction grids cannot be concatenated")
        return PatchFlipping(
            results[0].fractions, torch.cat([r.morf for r in results]), torch.cat([r.lerf for r in results])
        )


def _baseline_patch(baseline: Baseline, channels: int, patch_size: tuple[int, int], like: Tensor) -> Tensor:
    """The flattened patch ``(channels * ph * pw,)`` that replaces a flipped patch."""
    value = torch.as_tensor(baseline, dtype=like.dtype, device=like.device)
    if value.dim() == 0:
        value = value.expand(channels)
    if value.shape != (channels,):
        raise ValueError(f"baseline must be a number or one value per channel ({channels}), got {tuple(value.shape)}")
    return value[:, None].expand(channels, patch_size[0] * patch_size[1]).reshape(-1)


def patch_flipping(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    patch_scores: Tensor,
    target: Tensor | int,
    steps: int = 16,
    baseline: Baseline = 0.0,
    patch_size: tuple[int, int] | None = None,
    batch_size: int = 64,
) -> PatchFlipping:
    r"""
    MoRF / LeRF patch-flipping curves of the explained logit for precomputed patch scores.

    The conventions of :func:`~captum_mamba.evaluation.flipping.flipping_curves` (its
    :func:`~captum_mamba.evaluation.flipping.deletion_curves` computes them, the patches
    standing for tokens): signed ordering, ``round(k / steps * n)``
    patches flipped at step ``k``, the logit as the curve, trapezoidal areas over ``[0, 1]``.

    Args:
        model (Callable): ``model(images) -> (batch, classes)`` logits; an ``nn.Module`` with a
                    ``patch_embed`` gives the patch size when ``patch_size`` is not given.
        images (Tensor): ``(batch, channels, height, width)``.
        patch_scores (Tensor): ``(batch, grid_height, grid_width)`` (or ``(batch, patches)`` in
                    raster order); larger = more relevant.
        target (Tensor or int): the explained class per image (or one for all).
        steps (int, optional): flipping steps; the curve has ``steps + 1`` points. Default: 16
        baseline (float, sequence or Tensor, optional): the value of a flipped pixel, one number
                    or one per channel, in the model's (normalised) input space. Default: 0.0
                    (the normalised-zero image, i.e. the data set's mean colour)
        patch_size (tuple[int, int], optional): ``(patch_height, patch_width)``. Default: the
                    model's (see :func:`patch_geometry`)
        batch_size (int, optional): perturbed images per forward call. Default: 64

    Returns:
        *PatchFlipping* with the raw logit curves.
    """
    batch, channels, height, width = images.shape
    if patch_size is None:
        patch_size, grid_size = patch_geometry(model)  # type: ignore[arg-type]
    else:
        grid_size = (height // patch_size[0], width // patch_size[1])
    count = grid_size[0] * grid_size[1]
    scores = patch_scores.reshape(batch, -1)
    if scores.shape[1] != count:
        raise ValueError(f"patch_scores must hold {count} patches per image ({grid_size}), got {scores.shape[1]}")
    patches = images_to_patches(images.detach(), patch_size, grid_size)
    filler = _baseline_patch(baseline, channels, patch_size, patches)

    def forward(flat: Tensor, mask: Tensor | None) -> Tensor:
        # the patch sequence back to images; pixels outside the grid are never read by the model
        return model(patches_to_images(flat, patch_size, grid_size, (height, width)))

    fractions, morf, lerf = deletion_curves(
        forward, patches, scores, target, replacement=filler, steps=steps, batch_size=batch_size
    )
    return PatchFlipping(fractions, morf, lerf)


# --------------------------------------------------------------------------------------------
# known-mask metrics


def _check_masks(relevance: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    if relevance.shape != masks.shape or relevance.dim() != 3:
        raise ValueError(
            f"relevance and masks must both be (batch, height, width); got {tuple(relevance.shape)} and {tuple(masks.shape)}"
        )
    return relevance.detach().double().flatten(1), masks.to(relevance.device).bool().flatten(1)


def pointing_game(relevance: Tensor, masks: Tensor) -> Tensor:
    r"""
    The pointing game: whether the pixel of maximal relevance lies inside the object's mask.

    Args:
        relevance (Tensor): pixel relevance ``(batch, height, width)``.
        masks (Tensor): ``(batch, height, width)``, true on the object.

    Returns:
        *Tensor* ``(batch,)`` float64: 1 (hit) or 0 (miss) per image, NaN for an empty mask. Ties
        go to the first maximal pixel in raster order.
    """
    scores, inside = _check_masks(relevance, masks)
    hits = inside.gather(1, scores.argmax(1, keepdim=True))[:, 0].double()
    return torch.where(inside.any(1), hits, torch.full_like(hits, torch.nan))


def relevance_mass_accuracy(relevance: Tensor, masks: Tensor) -> Tensor:
    r"""
    Relevance-mass accuracy: positive relevance inside the mask / all positive relevance.

    Args:
        relevance (Tensor): pixel relevance ``(batch, height, width)``.
        masks (Tensor): ``(batch, height, width)``, true on the object.

    Returns:
        *Tensor* ``(batch,)`` float64 in ``[0, 1]``; 0 for a map without positive relevance, NaN
        for an empty mask.
    """
    scores, inside = _check_masks(relevance, masks)
    positive = scores.clamp(min=0)
    total = positive.sum(1)
    mass = torch.where(total > 0, (positive * inside).sum(1) / total.clamp(min=1e-300), torch.zeros_like(total))
    return torch.where(inside.any(1), mass, torch.full_like(mass, torch.nan))


def relevance_rank_accuracy(relevance: Tensor, masks: Tensor) -> Tensor:
    r"""
    Relevance-rank accuracy: of the ``K`` most relevant pixels, ``K`` the number of mask pixels,
    the fraction inside the mask.

    Args:
        relevance (Tensor): pixel relevance ``(batch, height, width)``.
        masks (Tensor): ``(batch, height, width)``, true on the object.

    Returns:
        *Tensor* ``(batch,)`` float64 in ``[0, 1]``, NaN for an empty mask. Ties are broken by a
        stable sort (raster order).
    """
    scores, inside = _check_masks(relevance, masks)
    size = inside.sum(1)
    order = scores.argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    top = ranks < size[:, None]
    accuracy = (top & inside).sum(1).double() / size.clamp(min=1).double()
    return torch.where(size > 0, accuracy, torch.full_like(accuracy, torch.nan))


MASK_METRICS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "pointing_game": pointing_game,
    "mass_accuracy": relevance_mass_accuracy,
    "rank_accuracy": relevance_rank_accuracy,
}
"""The known-mask metrics by report key."""


# --------------------------------------------------------------------------------------------
# runner


@dataclass
class ImageMethodResult:
    r"""
    Per-image results of one method.

    Args:
        method (str): the method's name.
        flipping (PatchFlipping): the patch-flipping curves.
        mask_metrics (dict[str, Tensor]): ``(N,)`` per metric of :data:`MASK_METRICS` (empty without masks).
        seconds (float): attribution time.
        maps (Tensor): pixel relevance of the first images (kept for the heatmap grid).
    """

    method: str
    flipping: PatchFlipping
    mask_metrics: dict[str, Tensor] = field(default_factory=dict)
    seconds: float = 0.0
    maps: Tensor | None = None

    def per_image(self) -> dict[str, Tensor]:
        """Every per-image metric by report key."""
        metrics = {
            "delta_af": self.flipping.delta_af,
            "area_morf": self.flipping.area_morf,
            "area_lerf": self.flipping.area_lerf,
            "delta_af_raw": self.flipping.delta_af_raw,
        }
        return {**metrics, **self.mask_metrics}


@dataclass
class ImageEvaluation:
    r"""
    The result of :func:`evaluate_images`.

    Args:
        results (dict[str, ImageMethodResult]): by method name, in the order evaluated.
        images (Tensor): the first images (those of the kept maps), normalised.
        labels (Tensor): the labels of all images.
        targets (Tensor): the explained class of every image.
        predictions (Tensor): the model's predicted class of every image.
        explained (str): ``"prediction"`` or ``"label"``.
        steps (int): flipping steps.
    """

    results: dict[str, ImageMethodResult]
    images: Tensor
    labels: Tensor
    targets: Tensor
    predictions: Tensor
    explained: str
    steps: int

    def table(self) -> list[dict[str, Any]]:
        """One row per method: mean and standard error of every metric (see :func:`mean_sem`)."""
        rows = []
        for name, result in self.results.items():
            spec = IMAGE_METHODS.get(name)
            row: dict[str, Any] = {
                "method": name,
                "label": spec.label if spec else name,
                "family": spec.family if spec else "",
                "seconds": result.seconds,
            }
            for key, values in result.per_image().items():
                mean, sem, count = mean_sem(values)
                row.update({key: mean, f"{key}_sem": sem, f"{key}_n": count})
            rows.append(row)
        return rows


def mean_sem(values: Tensor) -> tuple[float, float, int]:
    r"""
    Mean and standard error of the finite values (NaN marks an undefined value, e.g. an empty mask).

    Args:
        values (Tensor): ``(N,)``.

    Returns:
        *tuple* ``(mean, standard error, count)``; the error is ``std / sqrt(count)`` with
        the unbiased std (0 for one value; NaN mean for none).
    """
    finite = values.detach().double().flatten()
    finite = finite[torch.isfinite(finite)]
    count = int(finite.numel())
    if count == 0:
        return float("nan"), float("nan"), 0
    sem = float(finite.std() / count**0.5) if count > 1 else 0.0
    return float(finite.mean()), sem, count


def evaluate_images(
    model: nn.Module,
    split: ImageSplit,
    methods: Sequence[str] = EVALUATED_IMAGE_METHODS,
    steps: int = 16,
    batch_size: int = 16,
    explained: Explained = "prediction",
    baseline: Baseline = 0.0,
    keep: int = 4,
    progress: bool = False,
) -> ImageEvaluation:
    r"""
    Patch flipping (ΔA^F, A_MoRF, A_LeRF) and, when the split has masks, the known-mask metrics
    of several methods on a sample of images.

    Args:
        model (nn.Module): a :class:`~captum_mamba.models.vim.VisionMamba` in eval mode.
        split (ImageSplit): ``.images (N, C, H, W)``, ``.labels (N,)``, ``.masks (N, H, W)`` or None.
        methods (Sequence[str]): names of :data:`IMAGE_METHODS`. Default: all built-in ones
        steps (int, optional): flipping steps. Default: 16
        batch_size (int, optional): images per attribution batch. Default: 16
        explained (str, optional): explain the model's ``"prediction"`` (as the text
                    evaluation does) or the true ``"label"``. Default: "prediction"
        baseline (optional): the flipped pixels' value (see :func:`patch_flipping`). Default: 0.0
        keep (int, optional): pixel maps of the first ``keep`` images kept for the heatmap grid. Default: 4
        progress (bool, optional): print one line per method on stderr. Default: False

    Returns:
        *ImageEvaluation*; its :meth:`~ImageEvaluation.table` gives the mean ± standard error per method.
    """
    check_image_methods(methods)
    if explained not in ("prediction", "label"):
        raise ValueError(f"explained must be 'prediction' or 'label', got {explained!r}")
    images, labels = split.images, split.labels
    masks = getattr(split, "masks", None)
    if images.shape[0] == 0:
        raise ValueError("no images to evaluate")
    parameter = next(model.parameters(), None)
    if parameter is not None:  # the model's device and floating-point type
        images = images.to(device=parameter.device, dtype=parameter.dtype)
    device = images.device
    predictions = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            predictions.append(model(images[start : start + batch_size]).argmax(-1))
    predicted = torch.cat(predictions)
    targets = predicted if explained == "prediction" else labels.to(device).long()
    results: dict[str, ImageMethodResult] = {}
    for method in methods:
        curves, maps, per_mask = [], [], {key: [] for key in MASK_METRICS}
        elapsed = 0.0
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size]
            target = targets[start : start + batch_size]
            began = time.perf_counter()
            pixel, patch = image_attributions(method, model, batch, target)
            elapsed += time.perf_counter() - began
            curves.append(patch_flipping(model, batch, patch, target, steps=steps, baseline=baseline))
            if masks is not None:
                for key, metric in MASK_METRICS.items():
                    per_mask[key].append(metric(pixel, masks[start : start + batch_size]))
            if sum(m.shape[0] for m in maps) < keep:
                maps.append(pixel.cpu())
        result = ImageMethodResult(
            method,
            PatchFlipping.concatenate(curves),
            {key: torch.cat(values).cpu() for key, values in per_mask.items() if values},
            elapsed,
            torch.cat(maps)[:keep] if maps else None,
        )
        results[method] = result
        if progress:
            mean, sem, _ = mean_sem(result.flipping.delta_af)
            print(f"{method:22s} ΔA^F {mean:+.4f} ± {sem:.4f}  ({elapsed:.1f} s)", file=sys.stderr, flush=True)
    return ImageEvaluation(results, images[:keep].cpu(), labels.cpu(), targets.cpu(), predicted.cpu(), explained, steps)


# --------------------------------------------------------------------------------------------
# report


def image_table(evaluation: ImageEvaluation, command: str, dataset: str) -> dict[str, Any]:
    r"""
    The JSON document of an image evaluation (without provenance; :func:`write_image_report` adds it).

    Args:
        evaluation (ImageEvaluation): the result of :func:`evaluate_images`.
        command (str): the command that reproduces it.
        dataset (str): what the images are.

    Returns:
        *dict* with the metric definitions, one row per method (mean, ``_sem`` and ``_n`` per
        metric) and the mean normalised MoRF / LeRF curves.
    """
    rows = evaluation.table()
    ranked = [r for r in rows if r["family"] != "control"] or rows
    best = max(ranked, key=lambda r: r["delta_af"])
    has_masks = any(r.get("pointing_game_n") for r in rows)
    return {
        "dataset": dataset,
        "n": int(evaluation.targets.shape[0]),
        "command": command,
        "explained": evaluation.explained,
        "accuracy": float((evaluation.predictions == evaluation.labels).double().mean()),
        "metric": "ΔA^F = A_LeRF - A_MoRF of the explained logit divided by |unperturbed logit| under patch "
        f"flipping ({evaluation.steps} steps, flipped patches set to the normalised-zero image); areas over "
        "the fraction of patches flipped, 0..1; delta_af_raw in logit units"
        + (
            "; pointing game, relevance-mass and relevance-rank accuracy against the object masks (Arras et al., 2022)"
            if has_masks
            else ""
        ),
        "best_method": best["method"],
        "rows": rows,
        "fractions": next(iter(evaluation.results.values())).flipping.fractions,
        "mean_curves": {
            name: {
                kind: result.flipping.normalised(getattr(result.flipping, kind)).double().mean(0).tolist()
                for kind in ("morf", "lerf")
            }
            for name, result in evaluation.results.items()
        },
    }


def image_markdown(report: dict[str, Any]) -> str:
    r"""
    An image evaluation as a Markdown table (methods by ΔA^F, the control last).

    Args:
        report (dict): the document of :func:`image_table`.

    Returns:
        *str*.
    """
    masks = any(row.get("pointing_game_n") for row in report["rows"])
    header = "| method | ΔA^F (↑) | A_MoRF (↓) | A_LeRF (↑) | ΔA^F raw (logit) |"
    rule = "|---|---:|---:|---:|---:|"
    if masks:
        header += " pointing game (↑) | mass accuracy (↑) | rank accuracy (↑) |"
        rule += "---:|---:|---:|"
    lines = [
        f"Dataset: {report['dataset']} ({report['n']} images, explaining the {report['explained']}; "
        f"model accuracy {report['accuracy']:.3f}). Command: `{report['command']}`",
        "",
        header + " attribution time (s) |",
        rule + "---:|",
    ]

    def cell(row: dict[str, Any], key: str) -> str:
        return f"{row[key]:.3f} ± {row[f'{key}_sem']:.3f}"

    for row in sorted(report["rows"], key=lambda r: (r["family"] == "control", -r["delta_af"])):
        line = (
            f"| {row['label']} | {cell(row, 'delta_af')} | {cell(row, 'area_morf')} | {cell(row, 'area_lerf')} "
            f"| {cell(row, 'delta_af_raw')} |"
        )
        if masks:
            line += f" {cell(row, 'pointing_game')} | {cell(row, 'mass_accuracy')} | {cell(row, 'rank_accuracy')} |"
        lines.append(line + f" {row['seconds']:.1f} |")
    lines += ["", "Mean ± standard error over images. " + report["metric"] + "."]
    return "\n".join(lines) + "\n"


def plot_heatmap_grid(
    images: Tensor,
    maps: dict[str, Tensor],
    path: str | Path,
    row_labels: Sequence[str] | None = None,
    titles: dict[str, str] | None = None,
) -> Path:
    r"""
    A grid of heatmaps: one row per image, the image then one column per method.

    Each map is divided by its largest absolute value and drawn with the ``bwr`` colormap from
    -1 (blue) to 1 (red), white at 0; one colour bar is the legend.

    Args:
        images (Tensor): ``(N, C, H, W)`` displayable images, values in ``[0, 1]`` (e.g. the
                    split's ``denormalise(images)``); 1 or 3 channels.
        maps (dict[str, Tensor]): pixel relevance ``(N, H, W)`` per method (column order).
        path (str or Path): the PNG file (its folder is created).
        row_labels (Sequence[str], optional): one label per row (e.g. the class).
        titles (dict[str, str], optional): column titles by method. Default: the method names

    Returns:
        *Path* ``path``.
    """
    path = Path(path)
    rows = images.shape[0]
    columns = 1 + len(maps)
    figure, axes = plt.subplots(rows, columns, figsize=(1.8 * columns + 0.8, 1.8 * rows), squeeze=False)
    shown = images.detach().cpu().double().clamp(0, 1)
    for row in range(rows):
        picture = shown[row].permute(1, 2, 0).numpy()
        axis = axes[row, 0]
        if picture.shape[-1] == 1:
            axis.imshow(picture[..., 0], cmap="gray", vmin=0, vmax=1)
        else:
            axis.imshow(picture)
        if row_labels is not None:
            axis.set_ylabel(row_labels[row], fontsize=8)
        for column, relevance in enumerate(maps.values(), 1):
            heat = relevance[row].detach().cpu().double()
            scale = float(heat.abs().max())
            axes[row, column].imshow((heat / scale if scale > 0 else heat).numpy(), cmap="bwr", vmin=-1, vmax=1)
    for column, method in enumerate(["image", *maps]):
        axes[0, column].set_title((titles or {}).get(method, method), fontsize=8)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    legend = figure.colorbar(ScalarMappable(Normalize(-1, 1), cmap="bwr"), ax=axes, shrink=0.8, fraction=0.03)
    legend.set_label("relevance / max |relevance| of the map", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_image_report(
    evaluation: ImageEvaluation,
    out: str | Path,
    stem: str,
    command: str,
    dataset: str,
    denormalise: Callable[[Tensor], Tensor] | None = None,
    class_names: Sequence[str] | None = None,
    device: Any = None,
) -> list[Path]:
    r"""
    Write ``<stem>.json`` (with provenance), ``<stem>.md`` and ``<stem>_heatmaps.png`` under ``out``.

    Args:
        evaluation (ImageEvaluation): the result of :func:`evaluate_images`.
        out (str or Path): the folder.
        stem (str): the file names' stem, e.g. ``"images_digits"``.
        command (str): the command that reproduces the result.
        dataset (str): what the images are.
        denormalise (Callable, optional): normalised images to displayable ``[0, 1]`` ones. Default: identity
        class_names (Sequence[str], optional): class names for the heatmap rows' labels.
        device (optional): what it was computed on, for the provenance record.

    Returns:
        *list[Path]*: the files written (no PNG when the evaluation kept no maps).

    Raises:
        UntraceableResultError: ``out`` is under ``benchmarks/results/`` and the tree is dirty
                    (see :mod:`captum_mamba.evaluation.provenance`).
    """
    from captum_mamba.evaluation.report import write_json

    out = Path(out)
    report = image_table(evaluation, command, dataset)
    written = [write_json(report, out / f"{stem}.json", device)]
    markdown = out / f"{stem}.md"
    markdown.write_text(image_markdown(report), encoding="utf-8")
    written.append(markdown)
    maps = {name: r.maps for name, r in evaluation.results.items() if r.maps is not None}
    kept = evaluation.images.shape[0]
    if kept == 0 or not maps:  # keep=0: no heatmap grid
        return written
    shown = denormalise(evaluation.images) if denormalise is not None else evaluation.images
    labels = None
    if class_names is not None:
        labels = [
            f"{class_names[int(t)]}" + ("" if int(t) == int(y) else f" (label {class_names[int(y)]})")
            for t, y in zip(evaluation.targets[:kept], evaluation.labels[:kept])
        ]
    titles = {name: IMAGE_METHODS[name].label if name in IMAGE_METHODS else name for name in maps}
    titles["image"] = "image (explained class)" if labels else "image"
    written.append(plot_heatmap_grid(shown, maps, out / f"{stem}_heatmaps.png", labels, titles))
    return written
