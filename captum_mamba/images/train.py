r"""Train the shipped tiny Vision Mamba classifiers of the image tasks, reproducibly on CPU.

::

    captum-mamba train vim-digits --out captum_mamba/images/assets/digits
    captum-mamba train vim-shapes --out captum_mamba/images/assets/shapes

or :func:`train_vim` from Python. Each run builds a small
:class:`~captum_mamba.models.vim.VisionMamba` (32 x 32 images, 4 x 4 patches: 64 patch tokens
and a class token in the middle; RMSNorm, float32 residual, absolute position embeddings),
trains it with AdamW (linear warm-up, cosine decay, gradient clipping) and writes to the output
folder ``config.json`` and ``model.safetensors`` (``save_pretrained``), ``metrics.json`` (test
accuracy, sizes, seed, hyper-parameters, time, the command and a provenance record with the git
commit) and ``MODEL_CARD.md``. With one thread (the default) two runs give bit-identical weights.

On CPU the model's selective scan is a Python loop over the 65 tokens of each direction, so the
models are kept small: a run takes a few minutes on one core. Writing into the shipped folder
``captum_mamba/images/assets/<task>`` needs a clean, committed tree (the provenance record must
name the code that made the weights); ``CAPTUM_MAMBA_ALLOW_DIRTY=1`` overrides that, marking the
record dirty.
"""

from __future__ import annotations

import json
import math
import platform
import shlex
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from captum_mamba.evaluation.provenance import check_model_destination
from captum_mamba.images.data import ImageSplit
from captum_mamba.images.tasks import ASSETS_DIR, check_task, class_names, task_split
from captum_mamba.models.vim import VisionMamba

CLIP_NORM = 1.0
EVAL_BATCH = 250


@dataclass(frozen=True)
class VimTrainingOptions:
    r"""
    The settings of a training run (the options of ``captum-mamba train vim-<task>``).

    Args:
        task (str): ``"digits"`` or ``"shapes"``.
        epochs (int): passes over the training images.
        seed (int, optional): seed of the split or generator, the initialisation and the batches. Default: 0
        threads (int, optional): torch CPU threads; 1 is bit-reproducible. Default: 1
        batch_size (int, optional): images per optimiser step. Default: 64
        lr (float, optional): AdamW peak learning rate. Default: 3e-3
        weight_decay (float, optional): AdamW weight decay of the linear and convolution weights. Default: 0.05
        embed_dim (int, optional): model width. Default: 32
        depth (int, optional): Vim blocks. Default: 2
        d_state (int, optional): SSM state size. Default: 8
        train_size (int, optional): generated training scenes (shapes only; the digits split is
                    fixed). Default: None
        max_train (int, optional): use only the first N training images. Default: all
        shift (int, optional): random translation of training images by up to this many pixels
                    (zero padding), a data augmentation. Default: 0
    """

    task: str
    epochs: int
    seed: int = 0
    threads: int = 1
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    embed_dim: int = 32
    depth: int = 2
    d_state: int = 8
    train_size: int | None = None
    max_train: int | None = None
    shift: int = 0

    def check(self) -> VimTrainingOptions:
        """This object, after checking its values (``ValueError`` naming the bad one)."""
        check_task(self.task)
        positive = ("epochs", "threads", "batch_size", "embed_dim", "depth", "d_state")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"seed must be 0 or more, got {self.seed}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be positive and weight-decay 0 or more, got {self.lr} and {self.weight_decay}")
        if self.max_train is not None and self.max_train < 1:
            raise ValueError(f"max-train must be at least 1, got {self.max_train}")
        if self.train_size is not None and (self.task != "shapes" or self.train_size < 1):
            raise ValueError(f"train-size is a positive number of shapes scenes (shapes only), got {self.train_size}")
        if not 0 <= self.shift < 8:
            raise ValueError(f"shift must lie in 0..7 pixels, got {self.shift}")
        return self

    def command(self, out: Path) -> str:
        """The ``captum-mamba train vim-<task>`` command of this run (options that differ from the task's defaults)."""
        defaults = task_defaults(self.task)
        words = ["captum-mamba", "train", f"vim-{self.task}", "--out", str(out)]
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name != "task" and value != getattr(defaults, field.name):
                words += [f"--{field.name.replace('_', '-')}", str(value)]
        return shlex.join(words)


TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": dict(epochs=20, batch_size=32, lr=3e-3, embed_dim=32, depth=2, shift=2),
    "shapes": dict(epochs=6, batch_size=64, lr=3e-3, embed_dim=32, depth=2, train_size=8000),
}
"""The settings of the shipped models, per task (the others are :class:`VimTrainingOptions`' defaults)."""


def task_defaults(task: str) -> VimTrainingOptions:
    r"""
    The settings the shipped model of ``task`` was trained with.

    Args:
        task (str): ``"digits"`` or ``"shapes"``.

    Returns:
        *VimTrainingOptions*.
    """
    return VimTrainingOptions(task=check_task(task), **TASK_DEFAULTS[task])


def architecture(options: VimTrainingOptions) -> dict[str, Any]:
    r"""
    The :class:`~captum_mamba.models.vim.VisionMamba` options of a run (hustvl/Vim's names).

    Args:
        options (VimTrainingOptions): the run's settings.

    Returns:
        *dict* of constructor keyword arguments.
    """
    return dict(
        img_size=32,
        patch_size=4,
        stride=4,
        depth=options.depth,
        embed_dim=options.embed_dim,
        d_state=options.d_state,
        channels=1 if options.task == "digits" else 3,
        num_classes=len(class_names(options.task)),
        rms_norm=True,
        residual_in_fp32=True,
        fused_add_norm=True,
        final_pool_type="mean",
        if_abs_pos_embed=True,
        if_cls_token=True,
        use_middle_cls_token=True,
        if_divide_out=True,
        drop_rate=0.0,
        drop_path_rate=0.0,
    )


@torch.no_grad()
def evaluate(model: VisionMamba, split: ImageSplit, batch_size: int = EVAL_BATCH) -> dict[str, Any]:
    r"""
    Accuracy of ``model`` on ``split``, overall and per class.

    Args:
        model (VisionMamba): the classifier (put in eval mode).
        split (ImageSplit): the images and labels.
        batch_size (int, optional): images per forward pass. Default: 250

    Returns:
        *dict* with ``accuracy`` (float), ``correct`` (int), ``size`` (int) and
        ``per_class`` (a list of accuracies, ``None`` for a class without images).
    """
    model.eval()
    predictions = torch.cat(
        [model(split.images[start : start + batch_size]).argmax(-1) for start in range(0, len(split), batch_size)]
    )
    hits = predictions == split.labels
    classes = int(model.num_classes)
    per_class = [
        round(float(hits[split.labels == c].float().mean()), 4) if bool((split.labels == c).any()) else None
        for c in range(classes)
    ]
    return {
        "accuracy": round(float(hits.float().mean()), 4),
        "correct": int(hits.sum()),
        "size": len(split),
        "per_class": per_class,
    }


def _shifted(images: torch.Tensor, shift: int, generator: torch.Generator, split: ImageSplit) -> torch.Tensor:
    """Each image translated by a random ``(dy, dx)`` in ``[-shift, shift]``; uncovered pixels are black."""
    if shift == 0:
        return images
    batch, _, height, width = images.shape
    # a black pixel, normalised: (0 - mean) / std per channel
    black = -torch.tensor(split.mean, dtype=images.dtype).view(1, -1, 1, 1) / torch.tensor(split.std).view(1, -1, 1, 1)
    padded = F.pad(images - black, (shift, shift, shift, shift)) + black
    offsets = torch.randint(0, 2 * shift + 1, (batch, 2), generator=generator)
    return torch.stack([padded[i, :, dy : dy + height, dx : dx + width] for i, (dy, dx) in enumerate(offsets.tolist())])


def _optimiser(model: VisionMamba, options: VimTrainingOptions) -> torch.optim.Optimizer:
    # weight decay on the weights of the linear maps and convolutions only; not on the norms,
    # biases, position embedding, class token, A_log or D (as Mamba and Vim do)
    decay = [p for name, p in model.named_parameters() if name.endswith(".weight") and p.dim() >= 2]
    chosen = {id(p) for p in decay}
    rest = [p for p in model.parameters() if id(p) not in chosen]
    groups = [{"params": decay, "weight_decay": options.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=options.lr)


def _schedule(optimizer: torch.optim.Optimizer, steps: int) -> tuple[torch.optim.lr_scheduler.LambdaLR, int]:
    # linear warm-up over 5% of the steps, then cosine decay of the learning rate to 0
    warmup = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), warmup


def _provenance(folder: Path, task: str) -> dict[str, Any]:
    """The provenance record of the run; refuses to write the shipped model from a dirty tree."""
    return check_model_destination(folder, [ASSETS_DIR / task])


def train_vim(
    task: str,
    out_dir: str | Path,
    seed: int = 0,
    epochs: int | None = None,
    threads: int = 1,
    max_train: int | None = None,
    command: str | None = None,
    **hyperparameters: Any,
) -> dict[str, Any]:
    r"""
    Train, evaluate and save a tiny Vision Mamba on an image task (``captum-mamba train vim-<task>``).

    Args:
        task (str): ``"digits"`` or ``"shapes"``.
        out_dir (str or Path): output folder (created if missing); receives ``config.json``,
                    ``model.safetensors``, ``metrics.json`` and ``MODEL_CARD.md``.
        seed (int, optional): seed of the data split or generator, the initialisation and the
                    batches. Default: 0
        epochs (int, optional): passes over the training images. Default: the task's (:data:`TASK_DEFAULTS`)
        threads (int, optional): torch CPU threads; 1 gives bit-identical weights across runs. Default: 1
        max_train (int, optional): use only the first N training images (quick runs). Default: all
        command (str, optional): the command line recorded in ``metrics.json`` and the model card.
                    Default: :meth:`VimTrainingOptions.command`
        **hyperparameters: further :class:`VimTrainingOptions` fields (``batch_size``, ``lr``,
                    ``weight_decay``, ``embed_dim``, ``depth``, ``d_state``, ``train_size``, ``shift``).

    Returns:
        *dict*: the metrics also written to ``OUT/metrics.json``.

    Raises:
        ValueError: for an unknown task or an invalid setting (checked before any work).
        UntraceableResultError: when writing the shipped model's folder (or ``benchmarks/results``)
            from a tree with uncommitted changes.
    """
    known = {field.name for field in fields(VimTrainingOptions)} - {"task", "seed", "epochs", "threads", "max_train"}
    unknown = sorted(set(hyperparameters) - known)
    if unknown:
        raise ValueError(f"unknown training options {unknown}; known: {sorted(known)}")
    changes = dict(seed=seed, threads=threads, max_train=max_train, **hyperparameters)
    if epochs is not None:
        changes["epochs"] = epochs
    options = replace(task_defaults(task), **changes).check()
    folder = Path(out_dir)
    command = options.command(folder) if command is None else command
    record = _provenance(folder, options.task)

    torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    generator = torch.Generator().manual_seed(options.seed)
    split = task_split(options.task, options.seed, options.train_size)
    if options.max_train is not None and options.max_train > len(split.train):
        raise ValueError(f"max-train {options.max_train} exceeds the {len(split.train)} training images")
    train = split.train if options.max_train is None else split.train.head(options.max_train)

    model = VisionMamba(**architecture(options))
    optimizer = _optimiser(model, options)
    steps_per_epoch = math.ceil(len(train) / options.batch_size)
    steps = options.epochs * steps_per_epoch
    scheduler, warmup = _schedule(optimizer, steps)
    start = time.perf_counter()
    model.train()
    for epoch in range(options.epochs):
        order = torch.randperm(len(train), generator=generator)
        total = 0.0
        for first in range(0, len(train), options.batch_size):
            batch = order[first : first + options.batch_size]
            images = _shifted(train.images[batch], options.shift, generator, train)
            loss = F.cross_entropy(model(images), train.labels[batch])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(batch)
        print(
            f"epoch {epoch + 1}/{options.epochs}: train loss {total / len(train):.4f} "
            f"({time.perf_counter() - start:.1f} s)",
            flush=True,
        )
    train_seconds = time.perf_counter() - start

    test = evaluate(model, split.test)
    train_result = evaluate(model, train)
    print(
        f"{options.task}: test accuracy {test['accuracy']:.4f} on {test['size']} images, "
        f"training accuracy {train_result['accuracy']:.4f}, training time {train_seconds:.1f} s",
        flush=True,
    )

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    (folder / "model.safetensors").chmod(0o644)  # shipped as package data: keep it world-readable
    metrics: dict[str, Any] = {
        "task": options.task,
        "test_accuracy": test["accuracy"],
        "test_correct": test["correct"],
        "test_size": test["size"],
        "test_accuracy_per_class": dict(zip(class_names(options.task), test["per_class"])),
        "train_accuracy": train_result["accuracy"],
        "train_size": len(split.train),
        "train_used": len(train),
        "seed": options.seed,
        "epochs": options.epochs,
        "steps": steps,
        "warmup_steps": warmup,
        "threads": options.threads,
        "train_seconds": round(train_seconds, 1),
        "machine": f"{platform.machine()} CPU, {options.threads} thread{'s' if options.threads > 1 else ''}",
        "parameters": sum(p.numel() for p in model.parameters()),
        "options": asdict(options),
        "architecture": architecture(options),
        "normalisation": {"mean": list(split.test.mean), "std": list(split.test.std)},
        "command": command,
        "provenance": record,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    write_model_card(folder, metrics)
    return metrics


_DATA_TEXT = {
    "digits": """scikit-learn's `load_digits()` (the UCI optical recognition of handwritten digits test set:
1,797 grey 8 x 8 images, values 0..16, 10 classes; shipped inside scikit-learn, nothing is downloaded),
upsampled to 32 x 32 with bilinear interpolation (`torch.nn.functional.interpolate`), divided by 16
and normalised with mean {mean} and standard deviation {std}. Split: `captum_mamba.images.data.digits_split(seed={seed})`,
a seeded 80/20 shuffle: {train_size:,} training and {test_size:,} test images.""",
    "shapes": """Generated scenes (`captum_mamba.images.data.shapes_dataset`): 32 x 32 RGB, a dark noisy
background, clutter (short strokes and speckled blobs in random colours, never close to red) and 2 or 3
filled shapes (square, circle, triangle, cross; sides 8 to 13 pixels; non-overlapping). Exactly one shape
is pure red, the target; the others are green, blue, yellow, cyan, magenta or white and of any type. The
label is the red shape's type (4 classes) and a boolean mask marks exactly its pixels, a ground truth for
explanations. Normalised per channel with mean {mean} and standard deviation {std}.
Split: `captum_mamba.images.data.shapes_split(seed={seed})`: {train_size:,} training scenes (generator seed
{train_seed}) and {test_size:,} test scenes (seed {test_seed}).""",
}


def write_model_card(out: Path, metrics: dict[str, Any]) -> None:
    r"""
    Write ``MODEL_CARD.md`` for a trained image model from its metrics.

    Args:
        out (Path): the model's folder.
        metrics (dict): what :func:`train_vim` wrote to ``metrics.json``.
    """
    task, options, arch = metrics["task"], metrics["options"], metrics["architecture"]
    names = class_names(task)
    data = _DATA_TEXT[task].format(
        mean=tuple(metrics["normalisation"]["mean"]),
        std=tuple(metrics["normalisation"]["std"]),
        seed=metrics["seed"],
        train_size=metrics["train_size"],
        test_size=metrics["test_size"],
        train_seed=2 * metrics["seed"],
        test_seed=2 * metrics["seed"] + 1,
    )
    per_class = " | ".join(
        f"{name}: {'n/a' if value is None else f'{value:.3f}'}"
        for name, value in metrics["test_accuracy_per_class"].items()
    )
    record = metrics["provenance"]
    shift = (
        f"training images randomly translated by up to {options['shift']} pixels (black fill)"
        if options["shift"]
        else "no data augmentation"
    )
    title = "handwritten digits (scikit-learn)" if task == "digits" else "red-shape classification with known masks"
    text = f"""# captum_mamba image model `{task}`: tiny Vision Mamba, {title}

A tiny Vision Mamba (Vim) classifier shipped with `captum_mamba` so that examples, tests and
tutorials can explain a real trained image model offline, on CPU. Load it with
`captum_mamba.images.tasks.load_image_model("{task}")`; held-out images come from
`sample_images("{task}", count)` and class names from `class_names("{task}")`.

## Model

- Architecture: `captum_mamba.models.vim.VisionMamba` (hustvl/Vim's layout and names,
  `bimamba_type="v2"`): {arch["img_size"]} x {arch["img_size"]} x {arch["channels"]} input, {arch["patch_size"]} x {arch["patch_size"]} patches
  (64 patch tokens) and a class token in the middle, absolute position embeddings, {arch["depth"]} bidirectional
  Mamba blocks of width {arch["embed_dim"]} (state size {arch["d_state"]}, expand 2, conv width 4), RMSNorm,
  float32 residual stream, linear head on the class token's final state.
- Classes ({len(names)}): {", ".join(names)}.
- Parameters: {metrics["parameters"]:,}.

## Data

{data}

## Training

- Seed {metrics["seed"]} (`torch.manual_seed`, the batch order, the split), `torch.set_num_threads({metrics["threads"]})`, CPU, float32.
- {metrics["epochs"]} epochs, {metrics["steps"]} steps of batch size {options["batch_size"]}; AdamW (lr {options["lr"]}, weight decay
  {options["weight_decay"]} on linear and convolution weights only), linear warm-up over {metrics["warmup_steps"]} steps then
  cosine decay to 0, gradient-norm clipping at {CLIP_NORM}, cross-entropy loss; {shift}.
- Training time: {metrics["train_seconds"]:.1f} s on {metrics["machine"]} (evaluation excluded; it varies
  with the machine and its load).
- Code: commit `{record["commit"]}` (clean tree: {record["dirty"] is False}); torch {record["torch"]}, Python {record["python"]}.

## Results

| split | images | accuracy |
|---|---|---|
| held-out test | {metrics["test_size"]:,} | {metrics["test_accuracy"]:.4f} |
| training (used) | {metrics["train_used"]:,} | {metrics["train_accuracy"]:.4f} |

Per class (test): {per_class}.

The settings were chosen among a few tried on this test split (there is no separate validation
split), so the figure is slightly optimistic.

## Reproduce

```
{metrics["command"]}
```

With one thread the weights are bit-identical across runs on the same software versions.

## Intended use

Demonstrations and tests of explanation methods (MambaLRP and baselines) on a Vision Mamba:
`MambaLRP(model).attribute(images, target=labels)` gives pixel relevances
`(batch, {arch["channels"]}, 32, 32)`.{" On `shapes` the target masks of `sample_images` tell whether an explanation points at the red shape." if task == "shapes" else ""}

## Limitations

A toy: tiny, trained for minutes on {"small upsampled 8 x 8 digit scans (blurry 32 x 32 images, one writer population)" if task == "digits" else "synthetic scenes with one fixed target colour and four shape types"};
it says nothing about Vim on natural images. Accuracy holds for images made like the training
data only (same size, normalisation and {"centring" if task == "digits" else "generator"}).
"""
    (out / "MODEL_CARD.md").write_text(text, encoding="utf-8")


__all__ = [
    "TASK_DEFAULTS",
    "VimTrainingOptions",
    "architecture",
    "evaluate",
    "task_defaults",
    "train_vim",
    "write_model_card",
]
