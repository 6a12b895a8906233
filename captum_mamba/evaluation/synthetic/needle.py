"""Needle-in-a-haystack analysis: does an explanation find the one token the model relies on?"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from captum_mamba.default import load_quietly  # noqa: E402
from captum_mamba.evaluation.linear_time import linear_time_forward  # noqa: E402
from captum_mamba.evaluation.methods import METHODS, token_attributions  # noqa: E402
from captum_mamba.evaluation.report import DEFAULT_EVALUATION_METHODS  # noqa: E402
from captum_mamba.evaluation.synthetic.tasks import needle_batch  # noqa: E402
from captum_mamba.evaluation.synthetic.train import ASSETS  # noqa: E402
from captum_mamba.heads import MambaForSequenceClassification  # noqa: E402

NEEDLE_METHODS: tuple[str, ...] = DEFAULT_EVALUATION_METHODS


def _is_needle_model(folder: Path) -> bool:
    """Whether ``folder`` holds a needle-detection classifier (labels absent/present), not another task's model."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return "MambaForSequenceClassification" in (config.get("architectures") or []) and sorted(
        (config.get("id2label") or {}).values()
    ) == ["absent", "present"]


def shipped_needle_models() -> list[str]:
    """Names of the shipped needle models (sub-folders of ``assets/`` holding a needle classifier)."""
    return sorted(
        path.parent.name for path in ASSETS.parent.glob("*/model.safetensors") if _is_needle_model(path.parent)
    )


def load_needle_model(dtype: torch.dtype = torch.float32, name: str = "needle") -> MambaForSequenceClassification:
    r"""
    A shipped needle-detection model, offline, in eval mode (see ``assets/<name>/MODEL_CARD.md``).

    Args:
        dtype (torch.dtype, optional): parameter type; ``torch.float64`` conserves exactly.
                    Default: ``torch.float32``
        name (str, optional): ``"needle"`` (trained on 32-64 tokens) or ``"needle_multilength"``
                    (trained on 32-256 tokens), or a folder written by the training script.
                    Default: ``"needle"``

    Returns:
        *MambaForSequenceClassification* (class 1 = needle present, read-out at the last token).
    """
    # a folder of that name counts only if it holds a model: "needle" is also the CLI's default --out
    folder = Path(name) if (Path(name) / "model.safetensors").is_file() else ASSETS.parent / name
    if not (folder / "model.safetensors").is_file():
        raise ValueError(f"no needle model {name!r}; shipped: {', '.join(shipped_needle_models()) or 'none'}")
    if not _is_needle_model(folder):
        raise ValueError(
            f"{name!r} is not a needle-detection model (a classifier with labels absent/present); "
            f"shipped needle models: {', '.join(shipped_needle_models()) or 'none'}"
        )
    return load_quietly(MambaForSequenceClassification, folder, dtype)


def method_scores(
    method: str, model: nn.Module, input_ids: Tensor, target: Tensor | int = 1, fast: bool = True
) -> Tensor:
    r"""
    Token scores of ``method`` for ``target``. With ``fast``, methods other than MambaLRP and its
    variants (which bring their own linear-time rules) differentiate the model through
    :func:`~captum_mamba.evaluation.linear_time.linear_time_forward`: the same gradients as
    Hugging Face's CPU path up to rounding, without its quadratic-time backward.

    Returns:
        *Tensor* ``(batch, length)`` in float64.
    """
    if fast and METHODS[method].family not in ("lrp", "ablation"):
        with linear_time_forward(model):
            return token_attributions(method, model, input_ids, target).double()
    return token_attributions(method, model, input_ids, target).double()


def hits(scores: Tensor, needle: Tensor, k: int = 1, include_readout: bool = False) -> Tensor:
    r"""
    Whether the needle position is among the ``k`` highest scores of each row.

    Args:
        scores (Tensor): ``(batch, length)`` token scores; the last position is the read-out.
        needle (Tensor): ``(batch,)`` needle positions.
        k (int): how many top positions count.
        include_readout (bool): let the read-out position compete too.

    Returns:
        *Tensor* of bools ``(batch,)``.
    """
    if not include_readout:
        scores = scores[:, :-1]
    top = scores.topk(k, dim=1).indices
    return (top == needle[:, None]).any(1)


def needle_top1(
    model: nn.Module,
    methods: Sequence[str] | None = None,
    n: int = 200,
    length: int = 64,
    seed: int = 0,
    fast: bool = True,
) -> dict[str, dict[str, float]]:
    r"""
    Share of needle-containing sequences whose most relevant token is the needle, per method,
    with the read-out position excluded and included. The explained output is the logit of the
    class "present".

    Args:
        model (nn.Module): a needle-detection model (see :func:`load_needle_model`).
        methods (Sequence[str], optional): method names; default: every method registered in
                    ``METHODS`` when called (so methods added later are included).
        n (int): needle-containing sequences. length (int): their length. seed (int): sample seed.
        fast (bool): differentiate baselines through the linear-time scan (see :func:`method_scores`).

    Returns:
        *dict* ``{method: {"top1": ..., "top1_with_readout": ...}}``.
    """
    batch = needle_batch(n, length, torch.Generator().manual_seed(seed), present=True)
    report = {}
    for method in list(METHODS) if methods is None else methods:
        scores = method_scores(method, model, batch.input_ids, fast=fast)
        report[method] = {
            "top1": float(hits(scores, batch.needle_position).double().mean()),
            "top1_with_readout": float(hits(scores, batch.needle_position, include_readout=True).double().mean()),
        }
    with torch.no_grad():
        accuracy = float((model(input_ids=batch.input_ids).logits.argmax(-1) == 1).double().mean())
    report["_model"] = {"accuracy_on_these": accuracy, "n": n, "length": length}
    return report


def xra_grid(
    model: nn.Module,
    method: str,
    lengths: Sequence[int] = (32, 64, 128, 256),
    depths: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    n: int = 32,
    k: int = 1,
    seed: int = 0,
    fast: bool = True,
) -> Tensor:
    r"""
    Explanation-based retrieval accuracy: the share of sequences whose ``k`` most relevant
    tokens (read-out excluded) contain the needle, for each depth x length cell. ``fast``: see
    :func:`method_scores`.

    Returns:
        *Tensor* ``(len(depths), len(lengths))`` in ``[0, 1]``.
    """
    grid = torch.zeros(len(depths), len(lengths))
    for j, length in enumerate(lengths):
        for i, depth in enumerate(depths):
            batch = _cell_batch(n, length, depth, seed + 1000 * j + i)
            scores = method_scores(method, model, batch.input_ids, fast=fast)
            grid[i, j] = hits(scores, batch.needle_position, k).double().mean()
    return grid


def _cell_batch(n: int, length: int, depth: float, seed: int):
    return needle_batch(n, length, torch.Generator().manual_seed(seed), depth=depth, present=True)


@torch.no_grad()
def model_accuracy_grid(
    model: nn.Module,
    lengths: Sequence[int] = (32, 64, 128, 256),
    depths: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    n: int = 32,
    seed: int = 0,
) -> Tensor:
    r"""
    The model's accuracy ("present") on the very sequences of each cell of :func:`xra_grid`
    (same ``n`` and ``seed``): an explanation can only retrieve the needle the model found.

    Returns:
        *Tensor* ``(len(depths), len(lengths))`` in ``[0, 1]``.
    """
    grid = torch.zeros(len(depths), len(lengths))
    for j, length in enumerate(lengths):
        for i, depth in enumerate(depths):
            batch = _cell_batch(n, length, depth, seed + 1000 * j + i)
            grid[i, j] = (model(input_ids=batch.input_ids).logits.argmax(-1) == 1).double().mean()
    return grid


def plot_xra(
    grids: dict[str, Tensor],
    lengths: Sequence[int],
    depths: Sequence[float],
    path: Path,
    k: int = 1,
    accuracy: Tensor | None = None,
    title: str = "",
) -> Path:
    r"""
    XRA heatmaps, one panel per method, and the model's accuracy per cell as the last panel if
    ``accuracy`` is given.

    Returns:
        *Path* of the written PNG.
    """
    panels = {METHODS[method].label: grid for method, grid in grids.items()}
    if accuracy is not None:
        panels["model accuracy"] = accuracy
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for axis, (label, grid) in zip(axes[0], panels.items()):
        image = axis.imshow(grid.numpy(), vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
        axis.set_xticks(range(len(lengths)), [str(n) for n in lengths])
        axis.set_yticks(range(len(depths)), [f"{d:.2f}" for d in depths])
        axis.set_xlabel("sequence length")
        measure = "accuracy" if label == "model accuracy" else f"XRA@{k}"
        axis.set_title(f"{label}\nmean {measure} {float(grid.mean()):.2f}", fontsize=9)
        for (i, j), value in (
            (ij, float(grid[ij])) for ij in ((i, j) for i in range(grid.shape[0]) for j in range(grid.shape[1]))
        ):
            axis.text(
                j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value < 0.6 else "black"
            )
    axes[0][0].set_ylabel("needle depth")
    figure.subplots_adjust(wspace=0.3)
    figure.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
    if title:
        figure.suptitle(title, fontsize=10, y=1.02)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(figure)
    return path
