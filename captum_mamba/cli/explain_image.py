"""``captum-mamba explain-image``: explain a Vision Mamba's predictions on images, as heatmaps.

The inputs (image files or a shipped task's held-out images, the model, the normalisation) are
read by :func:`load_image_inputs`, which ``compare-images`` shares.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captum_mamba.cli.errors import UsageError, check_writable, output_folder, positive_int, unknown_names

DEFAULT_SAMPLES = 8
"""Held-out images explained with ``--task`` and no files, unless ``--samples`` says otherwise."""

EXPLAIN_METHODS = ("mamba_lrp", "input_x_gradient")
"""The methods of ``explain-image --method`` (every method is in ``compare-images``)."""

TASK_HINT = "--task digits|shapes (a shipped model) or --model DIR (a folder written by VisionMamba.save_pretrained)"

USAGE = """\
examples:
  captum-mamba explain-image --task digits                 the first 8 held-out digits
  captum-mamba explain-image --task shapes --samples 4 --out shapes-out
  captum-mamba explain-image cat.png dog.jpg --task shapes --target 1
  captum-mamba explain-image a.png --model my-vim --mean 0.5 --std 0.25 --gamma 0.5

Writes one PNG per image (the image, the relevance heatmap with its colour bar, the patch grid)
and index.html into --out, and prints per image the predicted class, the explained logit, the sum
of relevances and the convergence delta (the sum minus the logit). Image files are converted to
the model's channels (grey or RGB), resized to its image size and normalised with the task's mean
and std (--task) or with --mean/--std (--model; default: none, pixels in [0, 1])."""


@dataclass
class ImageInputs:
    r"""
    What an image command explains.

    Args:
        model (nn.Module): the classifier, in eval mode.
        images (Tensor): ``(batch, channels, height, width)``, normalised as the model expects.
        display (Tensor): the same images as shown, in ``[0, 1]``.
        names (list[str]): per image, the file as typed or ``"<task> #<index>"``.
        stems (list[str]): per image, a distinct file-name stem for its outputs.
        labels (list[int] or None): the true classes of a task's images.
        masks (Tensor or None): ``(batch, height, width)`` known object masks.
        class_names (list[str]): class names by index (the indices for ``--model``).
        model_name (str): the task or the model folder, for headings.
        patch_size (int or None): the model's patch size when patches do not overlap.
    """

    model: Any
    images: Any
    display: Any
    names: list[str]
    stems: list[str]
    labels: list[int] | None
    masks: Any
    class_names: list[str]
    model_name: str
    patch_size: int | None


def add_input_options(parser: argparse.ArgumentParser, samples: int) -> None:
    r"""
    The options that choose the images and the model, shared by ``explain-image`` and ``compare-images``.

    Args:
        parser (argparse.ArgumentParser): the subcommand's parser.
        samples (int): the default of ``--samples``.
    """
    parser.add_argument(
        "images", nargs="*", metavar="IMAGES", help="PNG or JPEG files (default: the task's held-out images)"
    )
    parser.add_argument("--task", help="a shipped task and its model: digits (grey 32x32) or shapes (RGB 32x32)")
    parser.add_argument("--model", metavar="DIR", help="a folder written by VisionMamba.save_pretrained")
    parser.add_argument(
        "--samples",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"with --task and no files: the first N held-out images (default {samples})",
    )
    parser.add_argument(
        "--mean",
        type=float,
        nargs="+",
        default=None,
        metavar="M",
        help="with --model: per-channel mean subtracted from pixels in [0, 1] (one value or one per channel; default 0)",
    )
    parser.add_argument(
        "--std",
        type=float,
        nargs="+",
        default=None,
        metavar="S",
        help="with --model: per-channel std the pixels are divided by (default 1)",
    )
    parser.add_argument(
        "--gamma", type=float, default=None, metavar="G", help="γ of MambaLRP's pixel rule (LRP-γ; default 0.25)"
    )


def _tasks() -> Any:
    try:
        tasks = importlib.import_module("captum_mamba.images.tasks")
    except ModuleNotFoundError as error:
        if error.name is None or not error.name.startswith("captum_mamba.images"):
            raise
        raise UsageError(
            "the shipped image tasks (captum_mamba.images) are not part of this installation; "
            "give --model DIR with a folder written by VisionMamba.save_pretrained"
        ) from None
    return tasks


def _task_normalisation(tasks: Any, task: str) -> tuple[list[float], list[float]]:
    """The task's per-channel mean and std: declared by the task, else read off its ``denormalise``."""
    import torch

    spec = tasks.IMAGE_TASKS[task] if isinstance(tasks.IMAGE_TASKS, dict) else None
    declared = []
    for name in ("mean", "std"):
        value = spec.get(name) if isinstance(spec, dict) else getattr(spec, name, None)
        declared.append(value)
    if all(value is not None for value in declared):
        mean, std = (torch.as_tensor(value, dtype=torch.float64).reshape(-1).tolist() for value in declared)
        return mean, std
    # denormalise(x) = x * std + mean per channel: read both off a small step (clipping to [0, 1] is harmless there)
    samples = tasks.sample_images(task, 1)
    zero = torch.zeros_like(samples.images[:1])
    step = 0.01
    mean = samples.denormalise(zero).double()[0].flatten(1).mean(1)
    std = (samples.denormalise(zero + step).double()[0].flatten(1).mean(1) - mean) / step
    return mean.tolist(), std.tolist()


def _per_channel(values: Sequence[float] | None, default: float, channels: int, option: str) -> list[float]:
    if values is None:
        return [default] * channels
    if len(values) == 1:
        return list(values) * channels
    if len(values) != channels:
        raise UsageError(f"{option} has {len(values)} values for a {channels}-channel model; give 1 or {channels}")
    return list(values)


def read_image(path: str | Path, channels: int, size: tuple[int, int]) -> Any:
    r"""
    Read an image file as a ``(channels, height, width)`` tensor in ``[0, 1]``: converted to grey
    (ITU-R 601 luma) or RGB, resized (bilinear, antialiased) to ``size``.

    Args:
        path (str or Path): a PNG or JPEG file (read with Pillow, else matplotlib).
        channels (int): 1 or 3.
        size (tuple[int, int]): height and width.

    Returns:
        *Tensor* of float32.

    Raises:
        UsageError: a missing or unreadable file, or channels other than 1 and 3.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    path = Path(path)
    if not path.exists():
        raise UsageError(f"image file {path} does not exist; check the path")
    if path.is_dir():
        raise UsageError(f"{path} is a folder; give image files (PNG or JPEG)")
    if channels not in (1, 3):
        raise UsageError(f"the model reads {channels}-channel images; image files work for 1 (grey) or 3 (RGB)")
    try:
        try:
            from PIL import Image
        except ImportError:  # matplotlib reads PNG without Pillow
            from matplotlib import image as mpimage

            array = np.asarray(mpimage.imread(path))
            array = array / 255.0 if array.dtype == np.uint8 else array.astype(np.float64)
        else:
            with Image.open(path) as picture:
                array = np.asarray(picture.convert("RGB"), dtype=np.float64) / 255.0
    except Exception as error:  # Pillow and matplotlib raise many kinds for a file that is no image
        raise UsageError(f"cannot read {path} as an image ({error}); give a PNG or JPEG file") from None
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise UsageError(f"cannot read {path} as an image (array of shape {array.shape}); give a PNG or JPEG file")
    array = array[..., :3]
    if channels == 1 and array.shape[2] == 3:
        array = array @ np.array([0.299, 0.587, 0.114])[:, None]
    elif channels == 3 and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    image = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float()
    if tuple(image.shape[-2:]) != tuple(size):
        image = F.interpolate(image[None], size=tuple(size), mode="bilinear", align_corners=False, antialias=True)[0]
    return image.clamp(0.0, 1.0)


def _distinct_stems(paths: Sequence[str]) -> list[str]:
    stems: list[str] = []
    for path in paths:
        stem = Path(path).stem or "image"
        candidate, number = stem, 2
        while candidate in stems:
            candidate, number = f"{stem}-{number}", number + 1
        stems.append(candidate)
    return stems


def _load_model(directory: str) -> Any:
    from captum_mamba.models.vim import VisionMamba

    folder = Path(directory)
    remedy = "give the folder written by VisionMamba.save_pretrained (config.json, model.safetensors)"
    if not folder.is_dir():
        raise UsageError(f"--model {folder} is not a folder; {remedy}")
    try:
        return VisionMamba.from_pretrained(folder).eval()
    except FileNotFoundError as error:
        raise UsageError(f"{error}; {remedy}") from None
    except (TypeError, ValueError, NotImplementedError, RuntimeError, OSError) as error:
        raise UsageError(f"cannot load a VisionMamba from {folder} ({error}); {remedy}") from None


def _geometry(model: Any, fallback: Any = None) -> tuple[int, tuple[int, int], int | None]:
    """The model's channels, image size and (non-overlapping) patch size."""
    config = getattr(model, "config", None) or {}
    if "channels" in config and "img_size" in config:
        size = config["img_size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
        channels = int(config["channels"])
    elif fallback is not None:
        channels, size = int(fallback.shape[1]), tuple(fallback.shape[-2:])
    else:
        raise UsageError("the model does not say its image size and channels; give a VisionMamba")
    patch = config.get("patch_size")
    patch = patch if isinstance(patch, int) and config.get("stride", patch) == patch else None
    return channels, size, patch


def check_image_options(args: argparse.Namespace) -> None:
    r"""
    The checks that need no model: one of ``--task`` / ``--model``, existing files, options that fit together.

    Args:
        args (argparse.Namespace): the parsed options (see :func:`add_input_options`).
    """
    if args.task is None and args.model is None:
        raise UsageError(f"say which model explains: give {TASK_HINT}")
    if args.task is not None and args.model is not None:
        raise UsageError("give --task or --model, not both; --task uses a shipped model, --model a saved one")
    for file in args.images:
        path = Path(file)
        if not path.exists():
            raise UsageError(f"image file {path} does not exist; check the path")
        if path.is_dir():
            raise UsageError(f"{path} is a folder; give image files (PNG or JPEG)")
    if args.images and args.samples is not None:
        raise UsageError("give image files or --samples N, not both; --samples picks the task's held-out images")
    if args.model is not None and not args.images:
        raise UsageError("--model comes with no images; give image files (PNG or JPEG) to explain")
    if args.task is not None and (args.mean is not None or args.std is not None):
        raise UsageError("--mean and --std go with --model; a --task normalises its images as its model was trained")
    if args.std is not None and any(value <= 0 for value in args.std):
        raise UsageError(f"--std must be positive, got {args.std}; give standard deviations above 0")
    if args.gamma is not None and args.gamma < 0:
        raise UsageError(f"--gamma must be 0 or more, got {args.gamma}; 0 is Gradient x Input at the pixels")


def load_image_inputs(args: argparse.Namespace, samples: int) -> ImageInputs:
    r"""
    Load the model and the images the options name (after :func:`check_image_options`).

    Args:
        args (argparse.Namespace): the parsed options (see :func:`add_input_options`).
        samples (int): held-out images taken when ``--samples`` is not given.

    Returns:
        *ImageInputs*.
    """
    import torch

    check_image_options(args)
    if args.task is not None:
        tasks = _tasks()
        error = unknown_names("image task", [args.task], list(tasks.IMAGE_TASKS), hint=", or give --model DIR")
        if error is not None:
            raise error
        model = tasks.load_image_model(args.task).eval()
        names_of_classes = [str(name) for name in tasks.class_names(args.task)]
        model_name = f"{args.task} (shipped Vision Mamba)"
    else:
        tasks = None
        model = _load_model(args.model)
        names_of_classes = [str(index) for index in range(int(model.config["num_classes"]))]
        model_name = f"VisionMamba from {args.model}"
    if not args.images:
        count = args.samples or samples
        try:
            chosen = tasks.sample_images(args.task, count)
        except (ValueError, IndexError) as error:
            raise UsageError(f"{error}; give a smaller --samples") from None
        images = torch.as_tensor(chosen.images)
        display = torch.as_tensor(chosen.denormalise(images)).clamp(0, 1)
        labels = [int(label) for label in chosen.labels] if getattr(chosen, "labels", None) is not None else None
        masks = getattr(chosen, "masks", None)
        _, _, patch = _geometry(model, images)
        return ImageInputs(
            model=model,
            images=images,
            display=display,
            names=[f"{args.task} #{index}" for index in range(len(images))],
            stems=[f"{args.task}-{index:03d}" for index in range(len(images))],
            labels=labels,
            masks=None if masks is None else torch.as_tensor(masks),
            class_names=names_of_classes,
            model_name=model_name,
            patch_size=patch,
        )
    known = "channels" in (getattr(model, "config", None) or {})
    channels, size, patch = _geometry(
        model, None if known or tasks is None else tasks.sample_images(args.task, 1).images
    )
    if tasks is not None:
        mean, std = _task_normalisation(tasks, args.task)
    else:
        mean = _per_channel(args.mean, 0.0, channels, "--mean")
        std = _per_channel(args.std, 1.0, channels, "--std")
    display = torch.stack([read_image(file, channels, size) for file in args.images])
    mean_t = torch.tensor(_per_channel(mean, 0.0, channels, "the task's mean"))[None, :, None, None]
    std_t = torch.tensor(_per_channel(std, 1.0, channels, "the task's std"))[None, :, None, None]
    return ImageInputs(
        model=model,
        images=((display - mean_t) / std_t).float(),
        display=display,
        names=list(args.images),
        stems=_distinct_stems(args.images),
        labels=None,
        masks=None,
        class_names=names_of_classes,
        model_name=model_name,
        patch_size=patch,
    )


def target_index(target: str | None, class_names: Sequence[str]) -> int | None:
    r"""
    The class index ``--target`` names (a class name in any case or an index), or None.

    Args:
        target (str or None): the option's value.
        class_names (Sequence[str]): the model's classes.

    Returns:
        *int* or *None*.
    """
    from captum_mamba.cli.explain import parse_target

    if target is None:
        return None
    try:
        return parse_target(target, list(class_names))
    except ValueError as error:
        raise UsageError(str(error)) from None


def _title(name: str, predicted: str, explained: str, label: str | None) -> str:
    parts = [name, f"->  predicted {predicted}"]
    if label is not None:
        parts.append(f"(label {label})")
    parts.append(f"explaining {explained}")
    return "  ".join(parts)


def run(args: argparse.Namespace) -> int:
    r"""
    Explain the images, write one heatmap PNG per image and ``index.html``, print one line per image.

    Args:
        args (argparse.Namespace): the parsed options of ``explain-image``.

    Returns:
        *int*: 0; a bad file, model, task, target or option raises :class:`~captum_mamba.cli.errors.UsageError`.
    """
    check_image_options(args)
    if args.gamma is not None and args.method != "mamba_lrp":
        raise UsageError(f"--gamma sets MambaLRP's pixel rule; drop it or use --method mamba_lrp, not {args.method}")
    check_writable(args.out)
    inputs = load_image_inputs(args, DEFAULT_SAMPLES)
    target = target_index(args.target, inputs.class_names)
    out = output_folder(args.out)

    import torch

    from captum_mamba.images.methods import IMAGE_METHODS, attribute_images
    from captum_mamba.visualization.image import ImageExplanation, image_report_html

    label = IMAGE_METHODS[args.method].label
    entries = []
    for start in range(0, len(inputs.images), 16):
        chunk = slice(start, start + 16)
        result = attribute_images(inputs.model, inputs.images[chunk], args.method, target=target, gamma=args.gamma)
        for row in range(len(result.relevance)):
            index = start + row
            predicted = inputs.class_names[int(result.predicted[row])]
            explained = inputs.class_names[int(result.targets[row])]
            true = None if inputs.labels is None else inputs.class_names[inputs.labels[index]]
            mask = None if inputs.masks is None else inputs.masks[index]
            entry = ImageExplanation(
                title=_title(inputs.names[index], predicted, explained, true),
                image=inputs.display[index],
                relevance=result.relevance[row].to(torch.float64).cpu(),
                predicted=predicted,
                explained=explained,
                logit=float(result.logits[row]),
                relevance_sum=float(result.sums[row]),
                delta=None if result.deltas is None else float(result.deltas[row]),
                probability=float(result.probabilities[row]),
                label=true,
                method=label,
                patch_size=inputs.patch_size,
                mask=mask,
                file=f"{inputs.stems[index]}_relevance.png",
            )
            png = out / entry.file
            png.write_bytes(entry.figure_png())
            entries.append(entry)
            delta = "n/a" if entry.delta is None else f"{entry.delta:+.3e}"
            print(
                f"{inputs.names[index]}: predicted {predicted} (p = {entry.probability:.3f}); explaining {explained}: "
                f"logit {entry.logit:+.6f}, sum of relevances {entry.relevance_sum:+.6f}, delta {delta} -> {png}",
                flush=True,
            )
    page = out / "index.html"
    page.write_text(image_report_html(entries, f"{label} explanations: {inputs.model_name}"), encoding="utf-8")
    print(f"wrote {len(entries)} heatmap(s) and {page}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    r"""
    Register ``explain-image``.

    Args:
        subparsers (argparse._SubParsersAction): the subcommands of ``captum-mamba``.

    Returns:
        *argparse.ArgumentParser*: the parser of ``explain-image``.
    """
    parser = subparsers.add_parser(
        "explain-image",
        help="explain a Vision Mamba on images (a shipped task's or PNG/JPEG files): heatmap PNGs and index.html",
        description="Explain a Vision Mamba's predictions on images with MambaLRP (or Gradient x Input).",
        epilog=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_options(parser, DEFAULT_SAMPLES)
    parser.add_argument(
        "--target", help="class to explain: a class name (any case) or an index (default: each image's prediction)"
    )
    parser.add_argument(
        "--method",
        choices=EXPLAIN_METHODS,
        default="mamba_lrp",
        help="attribution method (default mamba_lrp; compare-images shows more side by side)",
    )
    parser.add_argument(
        "--out",
        default="explain-image-out",
        help="output folder for the PNGs and index.html (default explain-image-out)",
    )
    return parser
