"""Dataset-level evaluations of the default sentiment model: faithfulness table, conservation, bias."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from captum_mamba.evaluation.flipping import FlippingResult, flipping_curves, replacement_vector  # noqa: E402
from captum_mamba.evaluation.methods import (  # noqa: E402
    METHODS,
    ExplainedLogits,
    attention_rules,
    check_methods,
    token_attributions,
)
from captum_mamba.evaluation.provenance import check_destination, with_provenance  # noqa: E402

DEFAULT_EVALUATION_METHODS: tuple[str, ...] = (
    "mamba_lrp",
    "naive_lrp",
    "input_x_gradient",
    "integrated_gradients",
    "smoothgrad",
    "saliency",
    "occlusion",
    "attention_rollout",
    "gradient_attention_rollout",
    "random",
    "mamba_lrp_no_silu",
    "mamba_lrp_no_ssm",
    "mamba_lrp_no_gate",
    "mamba_lrp_no_norm",
)


def _batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def evaluate_faithfulness(
    model: nn.Module,
    input_ids: list[torch.Tensor],
    methods: Sequence[str] = DEFAULT_EVALUATION_METHODS,
    steps: int = 10,
    replacement: Any = "zero",
    score: str = "logit",
    batch_size: int = 64,
    progress: bool = False,
    insertion_replacement: Any = None,
) -> tuple[dict[str, FlippingResult], dict[str, float]]:
    r"""
    ΔA^F / ΔA^I of several methods on a list of tokenized inputs, explaining the predicted class.

    Args:
        model (nn.Module): a Hugging Face-style classifier (``inputs_embeds``, ``attention_mask``).
        input_ids (list[Tensor]): one 1-d tensor of token ids per input.
        methods (Sequence[str]): names in :data:`~captum_mamba.evaluation.METHODS`.
        steps (int): flipping steps (fractions ``0, 1/steps, ..., 1``).
        replacement: see :func:`~captum_mamba.evaluation.flipping.replacement_vector`.
        insertion_replacement: the insertion curves' baseline, same forms; None: ``replacement``
                    (then ΔA^I = ΔA^F exactly, see :mod:`~captum_mamba.evaluation.flipping`).
        score (str): ``"logit"`` or ``"probability"``.
        batch_size (int): inputs per attribution batch (similar lengths together).
        progress (bool): print one line per method, and one per batch on stderr while it runs.

    Returns:
        *tuple* ``(results, seconds)``: a :class:`FlippingResult` per method (examples in the
        order given) and the attribution time per method.
    """
    check_methods(methods)
    if not input_ids:
        raise ValueError("no inputs to evaluate")
    forward = ExplainedLogits(model)
    embedding = model.get_input_embeddings()
    filler = replacement_vector(embedding, replacement)
    insertion_filler = None if insertion_replacement is None else replacement_vector(embedding, insertion_replacement)
    batches = _batches([len(ids) for ids in input_ids], batch_size)
    results: dict[str, FlippingResult] = {}
    seconds: dict[str, float] = {}
    for method in methods:
        parts, order, elapsed = [], [], 0.0
        explained = attributed_batches(method, model, input_ids, batches, progress=progress)
        for batch, (_, mask, target, scores, embeds, spent) in zip(batches, explained):
            elapsed += spent
            parts.append(
                flipping_curves(
                    forward, embeds, scores, target, mask, filler, steps, score, insertion_replacement=insertion_filler
                )
            )
            order.extend(batch)
        merged = FlippingResult.concatenate(parts)
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        results[method] = FlippingResult(
            merged.fractions,
            *(getattr(merged, k)[inverse] for k in ("morf", "lerf", "morf_insertion", "lerf_insertion")),
        )
        seconds[method] = elapsed
        if progress:
            summary = results[method].summary()
            print(f"{method:28s} ΔA^F {summary['delta_af']:+.4f} ± {summary['delta_af_sem']:.4f}  ({elapsed:.1f} s)")
    return results, seconds


def faithfulness_table(
    results: dict[str, FlippingResult],
    seconds: dict[str, float],
    command: str,
    dataset: str,
    model: str | None = None,
) -> dict[str, Any]:
    r"""
    The JSON document of an evaluation: per-method means and standard errors (provenance is
    added by :func:`write_json`).

    Args:
        results (dict): a :class:`FlippingResult` per method (:func:`evaluate_faithfulness`).
        seconds (dict): the attribution time per method.
        command (str): the command line that produced it.
        dataset (str): what was evaluated.
        model (str, optional): the model explained, shown in the table's header. Default: not recorded

    Returns:
        *dict*, JSON-ready.
    """
    rows = []
    for method, result in results.items():
        spec = METHODS[method]
        rows.append(
            {
                "method": method,
                "label": spec.label,
                "family": spec.family,
                "seconds": seconds.get(method),
                **result.summary(),
            }
        )
    best = max((r for r in rows if r["family"] not in ("ablation", "control")), key=lambda r: r["delta_af"])
    document: dict[str, Any] = {} if model is None else {"model": model}
    return document | {
        "dataset": dataset,
        "n": rows[0]["n"],
        "command": command,
        "metric": "ΔA^F = A_LeRF - A_MoRF of the explained logit under token deletion (zero embedding), "
        "and ΔA^I for insertion; areas over the fraction of tokens changed, 0..1",
        "best_method": best["method"],
        "rows": rows,
        "mean_curves": {
            m: {k: v.double().mean(0).tolist() for k, v in ((n, getattr(r, n)) for n in ("morf", "lerf"))}
            for m, r in results.items()
        },
        "fractions": next(iter(results.values())).fractions,
    }


def markdown_table(report: dict[str, Any]) -> str:
    """The evaluation as a Markdown table (ablations and controls after the methods)."""
    lines = [
        f"Dataset: {report['dataset']} ({report['n']} sentences). Command: `{report['command']}`",
        *([f"Model: {report['model']}."] if report.get("model") else []),
        "",
        "| method | ΔA^F (↑) | ΔA^I (↑) | A_MoRF | A_LeRF | attribution time (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    ranking = {"lrp": 0, "gradient": 0, "perturbation": 0, "attention": 0, "control": 1, "ablation": 2}
    for row in sorted(report["rows"], key=lambda r: (ranking.get(r["family"], 0), -r["delta_af"])):
        name = row["label"] + (" (ablation)" if row["family"] == "ablation" else "")
        lines.append(
            f"| {name} | {row['delta_af']:.3f} ± {row['delta_af_sem']:.3f} | {row['delta_ai']:.3f} ± {row['delta_ai_sem']:.3f} "
            f"| {row['area_morf']:.3f} | {row['area_lerf']:.3f} | {row['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot_faithfulness(report: dict[str, Any], path: Path) -> Path:
    """Bar plot of ΔA^F per method (with standard errors) and the mean MoRF / LeRF curves."""
    rows = sorted(report["rows"], key=lambda r: r["delta_af"], reverse=True)
    colours = {"lrp": "#c0392b", "ablation": "#e6b0aa", "control": "#999999", "attention": "#8e44ad"}
    figure, (bars, curves) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    bars.bar(
        [r["label"] for r in rows],
        [r["delta_af"] for r in rows],
        yerr=[r["delta_af_sem"] for r in rows],
        color=[colours.get(r["family"], "#2e86c1") for r in rows],
    )
    bars.set_ylabel("ΔA^F (higher is better)")
    model = f"{report['model']}\n" if report.get("model") else ""
    bars.set_title(f"{model}Token flipping, {report['dataset']} (n = {report['n']})", fontsize=10)
    bars.tick_params(axis="x", rotation=60)
    for label in bars.get_xticklabels():
        label.set_horizontalalignment("right")
    for method in ("mamba_lrp", "mamba_lrp_cp", "input_x_gradient", "integrated_gradients", "random"):
        if method in report["mean_curves"]:
            for kind, style in (("morf", "-"), ("lerf", "--")):
                curves.plot(
                    report["fractions"],
                    report["mean_curves"][method][kind],
                    style,
                    label=f"{METHODS[method].label} {kind.upper()}",
                )
    curves.set_xlabel("fraction of tokens removed")
    curves.set_ylabel("explained logit")
    curves.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=130)
    plt.close(figure)
    return path


def attributed_batches(
    method: str,
    model: nn.Module,
    input_ids: Sequence[torch.Tensor],
    batches: list[list[int]],
    progress: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]]:
    r"""
    Explain batches of inputs with one method, as the faithfulness and ERASER evaluations do.

    Args:
        method (str): a method of :data:`~captum_mamba.evaluation.METHODS`.
        model (nn.Module): the model.
        input_ids (Sequence[Tensor]): the inputs, one 1-D tensor of token ids each.
        batches (list[list[int]]): indices of ``input_ids`` per batch (see ``_batches``).
        progress (bool, optional): print a line on stderr before each batch. Default: False

    Returns:
        *Iterator* of ``(ids, mask, target, scores, embeds, seconds)`` per batch: the padded ids and
        mask, the predicted class explained, the method's token scores, the input embeddings and
        the attribution time.
    """
    embedding = model.get_input_embeddings()
    done = 0
    for number, batch in enumerate(batches, 1):
        if progress:
            print(
                f"  {method}: batch {number}/{len(batches)} ({done}/{len(input_ids)} inputs done)",
                file=sys.stderr,
                flush=True,
            )
        done += len(batch)
        ids, mask = _padded([input_ids[i] for i in batch])
        with torch.no_grad():
            target = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
        start = time.perf_counter()
        scores = token_attributions(method, model, ids, target, mask)
        seconds = time.perf_counter() - start
        yield ids, mask, target, scores, embedding(ids).detach(), seconds


def _padded(sequences: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(input_ids, attention_mask)`` of 1-d token-id tensors."""
    ids = torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True)
    mask = torch.nn.utils.rnn.pad_sequence([torch.ones_like(s) for s in sequences], batch_first=True)
    return ids, mask


def conservation_points(
    model: nn.Module, input_ids: list[torch.Tensor], batch_size: int = 64
) -> dict[str, list[list[float]]]:
    """``{method: [[logit, sum of relevances], ...]}`` for MambaLRP and Gradient x Input (predicted class),
    and MambaLRP with CP-LRP for attention (``mamba_lrp_cp``) on models with attention layers."""
    methods = ["mamba_lrp", "mamba_lrp_cp", "input_x_gradient"] if attention_rules(model) else None
    points: dict[str, list[list[float]]] = {m: [] for m in methods or ["mamba_lrp", "input_x_gradient"]}
    forward = ExplainedLogits(model)
    for batch in _batches([len(ids) for ids in input_ids], batch_size):
        ids, mask = _padded([input_ids[i] for i in batch])
        with torch.no_grad():
            logits = forward(model.get_input_embeddings()(ids), mask)
        target = logits.argmax(-1)
        explained = logits.gather(1, target[:, None])[:, 0]
        for method in points:
            sums = token_attributions(method, model, ids, target, mask).sum(-1)
            points[method].extend([float(a), float(b)] for a, b in zip(explained, sums))
    return points


def plot_conservation(points: dict[str, list[list[float]]], path: Path, title: str) -> Path:
    """Scatter of sum of relevances against the explained logit, one panel per method."""
    figure, axes = plt.subplots(1, len(points), figsize=(5 * len(points), 4.5))
    for axis, (method, pairs) in zip(axes, points.items()):
        logits, sums = zip(*pairs)
        axis.scatter(logits, sums, s=6, alpha=0.5)
        low, high = min(logits + sums), max(logits + sums)
        axis.plot([low, high], [low, high], "k--", lw=1, label="sum = logit")
        error = sum(abs(s - x) for x, s in pairs) / len(pairs)
        axis.set_title(f"{METHODS[method].label}: mean |sum R - logit| = {error:.3f}")
        axis.set_xlabel("explained logit")
        axis.set_ylabel("sum of token relevances")
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=130)
    plt.close(figure)
    return path


def top_tokens_by_class(
    model: nn.Module,
    input_ids: list[torch.Tensor],
    id_to_token: Any,
    method: str = "mamba_lrp",
    k: int = 3,
    batch_size: int = 64,
) -> dict[int, Counter]:
    r"""
    Bias analysis: for each predicted class, how often each token is among an input's ``k``
    most relevant tokens (for that class) over a corpus.

    Returns:
        *dict* ``{class index: Counter(token -> count)}``.
    """
    counts: dict[int, Counter] = {}
    for batch in _batches([len(ids) for ids in input_ids], batch_size):
        ids, mask = _padded([input_ids[i] for i in batch])
        with torch.no_grad():
            target = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
        scores = token_attributions(method, model, ids, target, mask).masked_fill(mask == 0, -torch.inf)
        top = scores.topk(min(k, ids.shape[1]), dim=1).indices
        for row in range(len(batch)):
            picked = [int(ids[row, j]) for j in top[row] if mask[row, j]]
            counts.setdefault(int(target[row]), Counter()).update(id_to_token(i) for i in picked)
    return counts


def word_list_share(counts: dict[int, Counter], words: Sequence[str]) -> dict[int, float]:
    """Share of the top-k slots of each class taken by tokens of ``words``."""
    wanted = {w.lower() for w in words}
    return {
        label: (sum(n for token, n in counter.items() if token.lower() in wanted) / max(1, sum(counter.values())))
        for label, counter in counts.items()
    }


def write_json(document: dict[str, Any], path: Path, device: Any = None) -> Path:
    r"""
    Write a report as JSON with a ``"provenance"`` entry (commit, clean tree, versions, device).

    Args:
        document (dict): the report.
        path (Path): the file; under ``benchmarks/results/`` it is written only from a clean,
                    committed tree (:func:`captum_mamba.evaluation.provenance.check_destination`).
        device (optional): what the report was computed on. Default: the CPU.

    Returns:
        *Path* ``path``.

    Raises:
        UntraceableResultError: ``path`` is under ``benchmarks/results/`` and the tree is dirty.
    """
    stamped = with_provenance(document, check_destination(path, device))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stamped, indent=1, ensure_ascii=False), encoding="utf-8")
    return path
