"""Quantus metrics on token explanations: an ``explain_func`` adapter and a token-presence model.

`Quantus <https://github.com/understandable-machine-intelligence-lab/Quantus>`_ (0.6; the ``eval``
extra) perturbs *input features* of an array and reads a model's outputs. Its perturbations are
written for images; for token inputs each token is one feature here: Quantus sees an array
``(batch, 1, 1, length)`` of token *presences* ``g`` (all 1 for the real input) and the wrapped
model (:class:`TokenPresenceModel`) runs the classifier on the embedding tensor

    e'_t = g_t * e_t + (1 - g_t) * r        (batch, length, hidden),

``r`` being the replacement embedding of the token-flipping evaluation (zeros by default). Setting
a presence to Quantus's baseline 0 therefore removes that token exactly as ΔA^F does, and a
presence between 0 and 1 (Quantus's uniform noise baseline) moves the token part of the way to
``r``. The adapter :func:`quantus_explain_func` maps presences to embeddings, explains them with a
method of :data:`~captum_mamba.evaluation.METHODS` and returns one relevance per token, shaped like
the presences.

Metrics (explaining the predicted class, on its logit):

* **faithfulness correlation** (Bhatt et al., IJCAI 2020): Pearson correlation, over random token
  subsets, between the subset's summed relevance and the logit drop when it is removed;
* **monotonicity correlation** (Nguyen & Martínez, 2020): Spearman correlation between the tokens'
  absolute relevances and the (normalised) squared logit change when each is perturbed;
* **region perturbation** (Samek et al., IEEE TNNLS 2017) with one-token regions, MoRF and LeRF:
  the curves ``logit(x) - logit(x with the k first tokens removed)``; their area gap is compared
  with the project's own ΔA^F (:mod:`~captum_mamba.evaluation.flipping`, one token per step),
  which it equals up to float error;
* **completeness** (Sundararajan et al., ICML 2017): ``sum_t R_t = logit(x) - logit(all tokens
  removed)``. Quantus 0.6 tests it with exact float equality; the relative gap
  ``|sum R - Δlogit| / |Δlogit|`` is reported next to it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from captum_mamba.evaluation.flipping import flipping_curves, replacement_vector
from captum_mamba.evaluation.methods import METHODS, ExplainedLogits, check_methods, embedding_attributions

QUANTUS_METRICS: tuple[str, ...] = (
    "faithfulness_correlation",
    "monotonicity_correlation",
    "region_perturbation",
    "completeness",
)
"""The metric columns of :func:`evaluate_quantus`."""


class TokenPresenceModel(nn.Module):
    r"""
    A classifier as Quantus sees it: token presences ``(batch, 1, 1, length)`` to logits.

    Args:
        model (nn.Module): a Hugging Face-style classifier (``inputs_embeds``, ``attention_mask``).
        embeds (Tensor): ``(batch, length, hidden)`` embeddings of the inputs evaluated (no padding).
        replacement (Tensor): ``(hidden,)`` embedding of a removed token.
    """

    def __init__(self, model: nn.Module, embeds: Tensor, replacement: Tensor) -> None:
        super().__init__()
        self.model = model
        self.forward_logits = ExplainedLogits(model)
        self.register_buffer("embeds", embeds.detach(), persistent=False)
        self.register_buffer("replacement", replacement.detach().to(embeds), persistent=False)
        self.eval()

    def embeddings(self, presences: Tensor | np.ndarray) -> Tensor:
        r"""
        The embedding tensor of given token presences.

        Args:
            presences (Tensor or np.ndarray): ``(batch, 1, 1, length)`` (or ``(batch, length)``).

        Returns:
            *Tensor* ``(batch, length, hidden)``: ``g * e + (1 - g) * r``.
        """
        batch, length, _ = self.embeds.shape
        gates = torch.as_tensor(presences).to(self.embeds).reshape(-1, length, 1)
        if gates.shape[0] != batch:
            raise ValueError(f"this model holds {batch} inputs, got presences for {gates.shape[0]}")
        return gates * self.embeds + (1 - gates) * self.replacement

    def forward(self, presences: Tensor) -> Tensor:
        """Logits ``(batch, classes)`` of the inputs with the given token presences."""
        return self.forward_logits(self.embeddings(presences), None)


def quantus_explain_func(
    model: TokenPresenceModel, inputs: np.ndarray, targets: np.ndarray, method: str = "mamba_lrp", **kwargs: Any
) -> np.ndarray:
    r"""
    Quantus's ``explain_func``: token relevances of a method for token-presence inputs.

    Args:
        model (TokenPresenceModel): the wrapped classifier (Quantus passes it back).
        inputs (np.ndarray): ``(batch, 1, 1, length)`` token presences.
        targets (np.ndarray): ``(batch,)`` explained classes.
        method (str, optional): a name in :data:`~captum_mamba.evaluation.METHODS`. Default: "mamba_lrp"
        **kwargs: Quantus's extra arguments (``device``, ...), ignored.

    Returns:
        *np.ndarray* ``(batch, 1, 1, length)`` of token relevances (``float64``).
    """
    embeds = model.embeddings(inputs)
    target = torch.as_tensor(np.asarray(targets), device=embeds.device).long()
    scores = embedding_attributions(method, model.model, embeds, target)
    return scores.double().cpu().numpy().reshape(np.shape(inputs))


@dataclass
class QuantusResult:
    r"""
    Per-example Quantus scores of one method (``nan`` where a correlation is undefined).

    Args:
        faithfulness_correlation (list[float]): Pearson correlations (higher is better).
        monotonicity_correlation (list[float]): Spearman correlations (higher is better).
        region_perturbation (list[float]): area gap of Quantus's LeRF and MoRF region-perturbation
                    curves, mean over the steps (higher is better).
        delta_af_one_token (list[float]): the project's ΔA^F, one token per step, same inputs.
        delta_af (list[float]): the project's ΔA^F with 10 steps (the faithfulness table's).
        completeness_exact (list[bool]): Quantus's completeness (exact equality).
        completeness_gap (list[float]): ``|sum R - Δlogit| / |Δlogit|``.
    """

    faithfulness_correlation: list[float] = field(default_factory=list)
    monotonicity_correlation: list[float] = field(default_factory=list)
    region_perturbation: list[float] = field(default_factory=list)
    delta_af_one_token: list[float] = field(default_factory=list)
    delta_af: list[float] = field(default_factory=list)
    completeness_exact: list[bool] = field(default_factory=list)
    completeness_gap: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Means and standard errors (over the examples where defined)."""
        result: dict[str, Any] = {"n": len(self.region_perturbation)}
        for name in (
            "faithfulness_correlation",
            "monotonicity_correlation",
            "region_perturbation",
            "delta_af_one_token",
            "delta_af",
            "completeness_gap",
        ):
            values = np.asarray(getattr(self, name), dtype=np.float64)
            values = values[np.isfinite(values)]
            result[name] = float(values.mean()) if values.size else float("nan")
            result[f"{name}_sem"] = float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else 0.0
        result["completeness_exact_share"] = float(np.mean(self.completeness_exact)) if self.completeness_exact else 0.0
        gap = np.abs(np.asarray(self.region_perturbation) - np.asarray(self.delta_af_one_token))
        gap = gap[np.isfinite(gap)]
        result["region_perturbation_vs_delta_af_max_abs_difference"] = float(gap.max()) if gap.size else 0.0
        result["quantus_undefined"] = int(np.sum(~np.isfinite(np.asarray(self.region_perturbation, dtype=np.float64))))
        return result


def _metrics(length: int, nr_runs: int, nr_samples: int) -> dict[str, Any]:
    import quantus

    quiet = {"disable_warnings": True, "display_progressbar": False, "return_aggregate": False}
    return {
        "faithfulness_correlation": quantus.FaithfulnessCorrelation(
            nr_runs=nr_runs,
            subset_size=max(1, round(length / 4)),
            perturb_baseline=0.0,
            normalise=False,
            abs=False,
            **quiet,
        ),
        "monotonicity_correlation": quantus.MonotonicityCorrelation(
            nr_samples=nr_samples,
            features_in_step=1,
            perturb_baseline="uniform",
            perturb_func_kwargs={"uniform_low": 0.0, "uniform_high": 1.0},
            normalise=False,
            **quiet,
        ),
        "morf": quantus.RegionPerturbation(
            patch_size=1, order="morf", regions_evaluation=length, perturb_baseline=0.0, normalise=False, **quiet
        ),
        "lerf": quantus.RegionPerturbation(
            patch_size=1, order="lerf", regions_evaluation=length, perturb_baseline=0.0, normalise=False, **quiet
        ),
        "completeness": quantus.Completeness(perturb_baseline=0.0, normalise=False, abs=False, **quiet),
    }


def quantus_accepts(attributions: np.ndarray) -> bool:
    r"""
    Whether Quantus 0.6 takes a batch of attributions: it refuses (an ``AssertionError`` in
    ``assert_attributions``) a batch whose attributions are all zero or all negative. Such a batch
    (e.g. one short sentence whose tokens all speak against the explained class) gets NaN for the
    Quantus metrics and is counted as ``quantus_undefined`` in the summary; the project's own
    ΔA^F is still computed for it.

    Args:
        attributions (np.ndarray): the batch's attributions.

    Returns:
        *bool*.
    """
    return not (np.all(attributions == 0) or np.all(attributions < 0))


def evaluate_quantus(
    model: nn.Module,
    input_ids: list[Tensor],
    methods: Sequence[str],
    replacement: Any = "zero",
    nr_runs: int = 50,
    nr_samples: int = 10,
    seed: int = 0,
    progress: bool = False,
) -> tuple[dict[str, QuantusResult], dict[str, float]]:
    r"""
    Quantus metrics of several methods on tokenized inputs, explaining the predicted class.

    Inputs of one length are evaluated together (no padding); inputs of fewer than two tokens are
    left out (a correlation over one token is undefined).

    Args:
        model (nn.Module): a Hugging Face-style classifier.
        input_ids (list[Tensor]): one 1-d tensor of token ids per input.
        methods (Sequence[str]): names in :data:`~captum_mamba.evaluation.METHODS`.
        replacement (optional): a removed token's embedding, see
                    :func:`~captum_mamba.evaluation.flipping.replacement_vector`. Default: "zero"
        nr_runs (int, optional): random subsets per input of faithfulness correlation. Default: 50
        nr_samples (int, optional): noise draws per token of monotonicity correlation. Default: 10
        seed (int, optional): seeds NumPy's generator (Quantus draws its subsets from it). Default: 0
        progress (bool, optional): print one line per method. Default: False

    Returns:
        *tuple* ``(results, seconds)``: a :class:`QuantusResult` per method (examples in input
        order, short ones left out) and the seconds spent per method (explaining and metrics).
    """
    try:
        import quantus  # noqa: F401
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("the Quantus metrics need quantus: pip install 'captum-mamba[eval]'") from error
    check_methods(methods)
    embedding = model.get_input_embeddings()
    filler = replacement_vector(embedding, replacement)
    groups: dict[int, list[int]] = {}
    for index, ids in enumerate(input_ids):
        if len(ids) >= 2:
            groups.setdefault(len(ids), []).append(index)
    if not groups:
        raise ValueError("no input has two tokens or more")
    kept = sorted(i for members in groups.values() for i in members)
    position = {index: p for p, index in enumerate(kept)}
    results: dict[str, QuantusResult] = {}
    seconds: dict[str, float] = {}
    for method in methods:
        per_example: dict[str, list[Any]] = {name: [None] * len(kept) for name in QuantusResult.__dataclass_fields__}
        start = time.perf_counter()
        for length, members in sorted(groups.items()):
            ids = torch.stack([input_ids[i] for i in members])
            embeds = embedding(ids).detach()
            wrapped = TokenPresenceModel(model, embeds, filler)
            with torch.no_grad():
                logits = wrapped.forward_logits(embeds, None)
            target = logits.argmax(-1)
            x = np.ones((len(members), 1, 1, length), dtype=np.float32)
            y = target.cpu().numpy()
            explain = {"explain_func": quantus_explain_func, "explain_func_kwargs": {"method": method}}
            a = quantus_explain_func(wrapped, x, y, method=method)
            call = {"x_batch": x, "y_batch": y, "a_batch": a, "channel_first": True, "batch_size": len(members)}
            scores: dict[str, Any] = {}
            if quantus_accepts(a):
                for name, metric in _metrics(length, nr_runs, nr_samples).items():
                    metric.a_axes = np.arange(3)  # the token axis; not inferred (length may equal another axis)
                    np.random.seed(seed)
                    scores[name] = metric(model=wrapped, device=str(embeds.device), softmax=False, **call, **explain)
            else:  # Quantus refuses the whole batch: its metrics are undefined (NaN) for these inputs
                undefined = [float("nan")] * len(members)
                scores = {name: undefined for name in _metrics(length, nr_runs, nr_samples)}
                scores["morf"] = scores["lerf"] = np.full((len(members), 1), np.nan)  # curves, one step
                scores["completeness"] = [False] * len(members)
            region = np.asarray(scores["morf"], dtype=np.float64) - np.asarray(scores["lerf"], dtype=np.float64)
            token_scores = torch.as_tensor(a.reshape(len(members), length))
            own = flipping_curves(wrapped.forward_logits, embeds, token_scores, target, None, filler, steps=None)
            tenth = flipping_curves(wrapped.forward_logits, embeds, token_scores, target, None, filler, steps=10)
            with torch.no_grad():
                emptied = wrapped(torch.zeros(len(members), 1, 1, length)).gather(1, target[:, None])[:, 0]
            change = (logits.gather(1, target[:, None])[:, 0] - emptied).double()
            gap = ((token_scores.sum(1) - change).abs() / change.abs().clamp_min(1e-12)).tolist()
            values = {
                "faithfulness_correlation": scores["faithfulness_correlation"],
                "monotonicity_correlation": scores["monotonicity_correlation"],
                "region_perturbation": region.mean(1).tolist(),
                "delta_af_one_token": own.delta_af.double().tolist(),
                "delta_af": tenth.delta_af.double().tolist(),
                "completeness_exact": [bool(v) for v in scores["completeness"]],
                "completeness_gap": gap,
            }
            for name, column in values.items():
                for index, value in zip(members, column):
                    per_example[name][position[index]] = float(value) if name != "completeness_exact" else value
        results[method] = QuantusResult(**per_example)
        seconds[method] = time.perf_counter() - start
        if progress:
            s = results[method].summary()
            print(
                f"{method:28s} faithfulness corr {s['faithfulness_correlation']:+.3f}  monotonicity corr "
                f"{s['monotonicity_correlation']:+.3f}  region perturbation {s['region_perturbation']:+.3f}  "
                f"(ΔA^F one token {s['delta_af_one_token']:+.3f})  completeness gap {s['completeness_gap']:.3f}  "
                f"({seconds[method]:.1f} s)"
            )
    return results, seconds


def quantus_table(
    results: dict[str, QuantusResult], seconds: dict[str, float], command: str, dataset: str
) -> dict[str, Any]:
    r"""
    The JSON document of a Quantus evaluation, with the method orderings of region perturbation and ΔA^F.

    Args:
        results (dict): ``{method: QuantusResult}`` from :func:`evaluate_quantus`.
        seconds (dict): time per method.
        command (str): the command line that produced it.
        dataset (str): what was evaluated.

    Returns:
        *dict* for :func:`~captum_mamba.evaluation.report.write_json`.
    """
    import quantus

    rows = []
    for method, result in results.items():
        spec = METHODS[method]
        rows.append(
            {"method": method, "label": spec.label, "family": spec.family, "seconds": seconds.get(method)}
            | result.summary()
        )

    def ranking(key: str) -> list[str]:
        return [r["method"] for r in sorted(rows, key=lambda r: -r[key])]

    region, tenth = ranking("region_perturbation"), ranking("delta_af")
    return {
        "dataset": dataset,
        "n": rows[0]["n"],
        "command": command,
        "quantus_version": quantus.__version__,
        "metric": "Quantus 0.6 on token presences (a removed token's embedding is the replacement, zeros): "
        "faithfulness correlation (Bhatt et al. 2020), monotonicity correlation (Nguyen & Martinez 2020), "
        "region perturbation with one-token regions (Samek et al. 2017; LeRF - MoRF area gap, mean over the "
        "steps, = ΔA^F with one token per step), completeness (Sundararajan et al. 2017; relative gap); "
        "explained: the predicted class's logit",
        "rows": rows,
        "ordering_region_perturbation": region,
        "ordering_delta_af_10_steps": tenth,
        "ordering_spearman": _spearman(region, tenth),
    }


def _spearman(first: list[str], second: list[str]) -> float:
    """Spearman rank correlation of two orderings of the same names."""
    n = len(first)
    if n < 2:
        return 1.0
    rank = {name: i for i, name in enumerate(second)}
    d2 = sum((i - rank[name]) ** 2 for i, name in enumerate(first))
    return 1 - 6 * d2 / (n * (n * n - 1))


def quantus_markdown(report: dict[str, Any]) -> str:
    r"""
    A Quantus report as a Markdown table (ablations and controls after the methods).

    Args:
        report (dict): from :func:`quantus_table`.

    Returns:
        *str*.
    """
    lines = [
        f"Dataset: {report['dataset']} ({report['n']} sentences), Quantus {report['quantus_version']}. "
        f"Command: `{report['command']}`",
        "",
        "| method | faithfulness corr. (↑) | monotonicity corr. (↑) | region perturbation (↑) "
        "| ΔA^F, 1 token/step | ΔA^F, 10 steps | completeness gap (↓) | time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = {"control": 1, "ablation": 2}
    for row in sorted(report["rows"], key=lambda r: (order.get(r["family"], 0), -r["region_perturbation"])):
        name = row["label"] + (" (ablation)" if row["family"] == "ablation" else "")
        cells = [
            f"{row[k]:.3f} ± {row[k + '_sem']:.3f}"
            for k in ("faithfulness_correlation", "monotonicity_correlation", "region_perturbation")
        ]
        lines.append(
            f"| {name} | {' | '.join(cells)} | {row['delta_af_one_token']:.3f} | {row['delta_af']:.3f} "
            f"| {row['completeness_gap']:.3f} | {row['seconds']:.1f} |"
        )
    lines += [
        "",
        f"Spearman correlation of the method orderings by region perturbation and by ΔA^F (10 steps): "
        f"{report['ordering_spearman']:.3f}",
    ]
    refused = {row["label"]: row.get("quantus_undefined", 0) for row in report["rows"]}
    refused = {label: n for label, n in refused.items() if n}
    if refused:
        listing = ", ".join(f"{label} {n}" for label, n in refused.items())
        lines += [
            "",
            "Inputs Quantus refused (all attributions of a same-length batch negative or zero; the Quantus "
            f"columns leave them out, the ΔA^F columns keep them): {listing}.",
        ]
    return "\n".join(lines) + "\n"
