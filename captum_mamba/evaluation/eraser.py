"""ERASER comprehensiveness and sufficiency of token explanations, as AOPC over top-k% bins.

DeYoung et al., *ERASER: A Benchmark to Evaluate Rationalized NLP Models*, ACL 2020, measure how
faithful a rationale (a set of input tokens) is with the model's probability ``p(y | .)`` of the
explained class ``y``:

* **comprehensiveness** ``p(y | x) - p(y | x without the rationale)``: removing the tokens an
  explanation calls relevant should lower the probability (higher is better);
* **sufficiency** ``p(y | x) - p(y | the rationale only)``: the relevant tokens alone should keep
  the prediction (lower is better; negative when the rationale alone is *more* confident).

For continuous token scores the paper's AOPC variant takes the top ``k`` % of the tokens as the
rationale for each bin ``k`` in ``{1, 5, 10, 20, 50}`` and averages the two quantities over the
bins (as the released ERASER scorer does). Here bin ``k`` of an input with ``n`` real tokens takes
``ceil(k / 100 * n)`` tokens (at least one), ranked by signed relevance, largest first (ties in
position order), exactly like the MoRF order of :mod:`~captum_mamba.evaluation.flipping`.

A token is removed by *deleting* it from the sequence (``removal="delete"``, as in ERASER: the
remaining tokens move together, the input gets shorter) or by replacing its embedding
(``removal="replace"``, the replacement of the token-flipping evaluation). An input left with no
token at all (comprehensiveness of a one-token input) is scored as a single replacement token.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from captum_mamba.evaluation.flipping import replacement_vector
from captum_mamba.evaluation.methods import METHODS, ExplainedLogits, check_methods

ERASER_BINS: tuple[float, ...] = (0.01, 0.05, 0.10, 0.20, 0.50)
"""The rationale sizes of the ERASER AOPC metrics, as fractions of an input's tokens."""

Removal = Literal["delete", "replace"]


@dataclass
class EraserResult:
    r"""
    Per-example ERASER scores of one explanation method.

    Args:
        bins (list[float]): rationale sizes as fractions of the real tokens.
        probability (Tensor): ``p(y | x)`` of the explained class, ``(batch,)``.
        comprehensiveness (Tensor): ``p(y | x) - p(y | x without the top-k)``, ``(batch, bins)``.
        sufficiency (Tensor): ``p(y | x) - p(y | top-k only)``, ``(batch, bins)``.
    """

    bins: list[float]
    probability: Tensor
    comprehensiveness: Tensor
    sufficiency: Tensor

    @property
    def aopc_comprehensiveness(self) -> Tensor:
        """Comprehensiveness averaged over the bins, per example (higher is better)."""
        return self.comprehensiveness.mean(1)

    @property
    def aopc_sufficiency(self) -> Tensor:
        """Sufficiency averaged over the bins, per example (lower is better)."""
        return self.sufficiency.mean(1)

    def summary(self) -> dict[str, Any]:
        """Means and standard errors over the examples, and the mean per bin."""
        result: dict[str, Any] = {"n": int(self.probability.shape[0])}
        for name in ("aopc_comprehensiveness", "aopc_sufficiency"):
            values = getattr(self, name).double()
            result[name] = float(values.mean())
            result[f"{name}_sem"] = float(values.std() / values.numel() ** 0.5) if values.numel() > 1 else 0.0
        result["comprehensiveness_per_bin"] = self.comprehensiveness.double().mean(0).tolist()
        result["sufficiency_per_bin"] = self.sufficiency.double().mean(0).tolist()
        return result

    @staticmethod
    def concatenate(results: Sequence[EraserResult]) -> EraserResult:
        """Stack the examples of several results with the same bins."""
        if len({tuple(r.bins) for r in results}) != 1:
            raise ValueError("results with different bins cannot be concatenated")
        return EraserResult(
            list(results[0].bins),
            torch.cat([r.probability for r in results]),
            torch.cat([r.comprehensiveness for r in results]),
            torch.cat([r.sufficiency for r in results]),
        )

    def select(self, index: Tensor) -> EraserResult:
        """The examples at ``index``, in that order."""
        return EraserResult(self.bins, self.probability[index], self.comprehensiveness[index], self.sufficiency[index])


def rationale_masks(scores: Tensor, attention_mask: Tensor | None, fraction: float) -> Tensor:
    r"""
    The top ``fraction`` of each input's real tokens by signed score: ``ceil(fraction * n)``, at least 1.

    Args:
        scores (Tensor): ``(batch, length)`` token relevances.
        attention_mask (Tensor, optional): ``(batch, length)``, 1 for real tokens.
        fraction (float): rationale size, in ``(0, 1]``.

    Returns:
        *Tensor* ``(batch, length)`` of booleans, True on the rationale's tokens.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"a rationale fraction must be in (0, 1], got {fraction}")
    mask = torch.ones_like(scores, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    real = mask.sum(1)
    counts = torch.tensor([max(1, math.ceil(fraction * int(n) - 1e-9)) if n else 0 for n in real])
    low = torch.finfo(torch.float64).min
    order = torch.where(mask, scores.double(), torch.full_like(scores, low, dtype=torch.float64)).argsort(
        dim=1, descending=True, stable=True
    )
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(scores.shape[1], device=order.device).expand_as(order))
    return (ranks < counts.to(ranks.device)[:, None]) & mask


def _kept_inputs(embeds: Tensor, keep: Tensor, filler: Tensor, removal: Removal) -> tuple[Tensor, Tensor | None]:
    """Inputs with only the ``keep`` positions left: deleted (packed to the left) or replaced."""
    if removal == "replace":
        return torch.where(keep[..., None], embeds, filler), None
    counts = keep.sum(1)
    order = (~keep).long().argsort(dim=1, stable=True)  # kept positions first, in their order
    packed = embeds.gather(1, order[..., None].expand_as(embeds))
    width = max(1, int(counts.max()))
    positions = torch.arange(width, device=embeds.device)
    mask = positions[None, :] < counts[:, None]
    packed = torch.where(mask[..., None], packed[:, :width], torch.zeros_like(packed[:, :width]))
    empty = counts == 0
    if empty.any():  # nothing left: one replacement token
        packed[empty, 0] = filler
        mask[empty, 0] = True
    return packed, mask.long()


@torch.no_grad()
def eraser_scores(
    forward: Callable[[Tensor, Tensor | None], Tensor],
    embeds: Tensor,
    scores: Tensor,
    target: Tensor | int,
    attention_mask: Tensor | None = None,
    bins: Sequence[float] = ERASER_BINS,
    removal: Removal = "delete",
    replacement: Tensor | None = None,
) -> EraserResult:
    r"""
    ERASER comprehensiveness and sufficiency of precomputed token scores (from any method).

    Args:
        forward (Callable): ``forward(embeds, attention_mask) -> (batch, classes)`` logits, e.g.
                    :class:`~captum_mamba.evaluation.ExplainedLogits`.
        embeds (Tensor): ``(batch, length, hidden)`` input embeddings (right padding).
        scores (Tensor): ``(batch, length)`` token relevances (signed; larger = more relevant).
        target (Tensor or int): the explained class per example (or one for all).
        attention_mask (Tensor, optional): ``(batch, length)``, 1 for real tokens.
        bins (Sequence[float], optional): rationale sizes as fractions. Default: :data:`ERASER_BINS`
        removal (str, optional): ``"delete"`` the removed tokens from the sequence (ERASER) or
                    ``"replace"`` their embeddings by ``replacement``. Default: "delete"
        replacement (Tensor, optional): ``(hidden,)`` embedding of a replaced token (and of an
                    input left empty). Default: zeros

    Returns:
        *EraserResult*.
    """
    if removal not in ("delete", "replace"):
        raise ValueError(f"removal must be 'delete' or 'replace', got {removal!r}")
    batch, length, _ = embeds.shape
    if scores.shape != (batch, length):
        raise ValueError(f"scores must have shape {(batch, length)}, got {tuple(scores.shape)}")
    if not bins:
        raise ValueError("give at least one bin")
    mask = (
        torch.ones(batch, length, dtype=torch.bool, device=embeds.device)
        if attention_mask is None
        else attention_mask.bool()
    )
    filler = torch.zeros_like(embeds[0, 0]) if replacement is None else replacement.to(embeds)
    target = torch.as_tensor(target, device=embeds.device).long().expand(batch)

    def probability(inputs: Tensor, input_mask: Tensor | None) -> Tensor:
        logits = forward(inputs, input_mask)
        return logits.double().softmax(-1).gather(1, target[:, None])[:, 0]

    full = probability(embeds, attention_mask)
    comprehensiveness, sufficiency = [], []
    for fraction in bins:
        rationale = rationale_masks(scores, mask, fraction)
        for keep, out in ((mask & ~rationale, comprehensiveness), (rationale, sufficiency)):
            if removal == "replace":  # padding stays as it is
                inputs, input_mask = _kept_inputs(embeds, keep | ~mask, filler, removal)[0], attention_mask
            else:
                inputs, input_mask = _kept_inputs(embeds, keep, filler, removal)
            out.append(full - probability(inputs, input_mask))
    return EraserResult(
        list(bins), full.float(), torch.stack(comprehensiveness, 1).float(), torch.stack(sufficiency, 1).float()
    )


def evaluate_eraser(
    model: nn.Module,
    input_ids: list[Tensor],
    methods: Sequence[str],
    bins: Sequence[float] = ERASER_BINS,
    removal: Removal = "delete",
    replacement: Any = "zero",
    batch_size: int = 64,
    progress: bool = False,
) -> tuple[dict[str, EraserResult], dict[str, float]]:
    r"""
    ERASER AOPC comprehensiveness / sufficiency of several methods, explaining the predicted class.

    Args:
        model (nn.Module): a Hugging Face-style classifier (``inputs_embeds``, ``attention_mask``).
        input_ids (list[Tensor]): one 1-d tensor of token ids per input.
        methods (Sequence[str]): names in :data:`~captum_mamba.evaluation.METHODS`.
        bins (Sequence[float], optional): rationale sizes as fractions. Default: :data:`ERASER_BINS`
        removal (str, optional): ``"delete"`` or ``"replace"`` (see :func:`eraser_scores`).
                    Default: "delete"
        replacement (optional): see :func:`~captum_mamba.evaluation.flipping.replacement_vector`.
                    Default: "zero"
        batch_size (int, optional): inputs per attribution batch (similar lengths together). Default: 64
        progress (bool, optional): print one line per method. Default: False

    Returns:
        *tuple* ``(results, seconds)``: an :class:`EraserResult` per method (examples in the order
        given) and the attribution time per method.
    """
    from captum_mamba.evaluation.report import _batches, attributed_batches

    check_methods(methods)
    if not input_ids:
        raise ValueError("no inputs to evaluate")
    forward = ExplainedLogits(model)
    embedding = model.get_input_embeddings()
    filler = replacement_vector(embedding, replacement)
    batches = _batches([len(ids) for ids in input_ids], batch_size)
    order = torch.tensor([i for batch in batches for i in batch])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))
    results: dict[str, EraserResult] = {}
    seconds: dict[str, float] = {}
    for method in methods:
        parts, elapsed = [], 0.0
        for _, mask, target, scores, embeds, spent in attributed_batches(method, model, input_ids, batches):
            elapsed += spent
            parts.append(eraser_scores(forward, embeds, scores, target, mask, bins, removal, filler))
        results[method] = EraserResult.concatenate(parts).select(inverse)
        seconds[method] = elapsed
        if progress:
            s = results[method].summary()
            print(
                f"{method:28s} comprehensiveness {s['aopc_comprehensiveness']:+.4f}  "
                f"sufficiency {s['aopc_sufficiency']:+.4f}  ({elapsed:.1f} s)"
            )
    return results, seconds


def eraser_table(
    results: dict[str, EraserResult],
    seconds: dict[str, float],
    command: str,
    dataset: str,
    removal: str = "delete",
) -> dict[str, Any]:
    r"""
    The JSON document of an ERASER evaluation: per-method AOPC means and standard errors.

    Args:
        results (dict): ``{method: EraserResult}`` from :func:`evaluate_eraser`.
        seconds (dict): attribution time per method.
        command (str): the command line that produced it.
        dataset (str): what was evaluated.
        removal (str): how tokens were removed (``"delete"`` or ``"replace"``).

    Returns:
        *dict* for :func:`~captum_mamba.evaluation.report.write_json`.
    """
    rows = []
    for method, result in results.items():
        spec = METHODS[method]
        rows.append(
            {"method": method, "label": spec.label, "family": spec.family, "seconds": seconds.get(method)}
            | result.summary()
        )
    return {
        "dataset": dataset,
        "n": rows[0]["n"],
        "command": command,
        "metric": "ERASER (DeYoung et al., ACL 2020) AOPC comprehensiveness p(y|x) - p(y|x without the top-k%) "
        "(higher is better) and sufficiency p(y|x) - p(y|top-k% only) (lower is better), averaged over the bins; "
        f"explained class: the prediction; tokens removed by {'deletion' if removal == 'delete' else 'replacement'}",
        "bins": list(next(iter(results.values())).bins),
        "removal": removal,
        "rows": rows,
    }


def eraser_markdown(report: dict[str, Any]) -> str:
    r"""
    An ERASER report as a Markdown table (ablations and controls after the methods).

    Args:
        report (dict): from :func:`eraser_table`.

    Returns:
        *str*.
    """
    bins = ", ".join(f"{100 * b:g}" for b in report["bins"])
    lines = [
        f"Dataset: {report['dataset']} ({report['n']} sentences), top-k% bins {{{bins}}}, tokens removed by "
        f"{report['removal']}. Command: `{report['command']}`",
        "",
        "| method | comprehensiveness (↑) | sufficiency (↓) | attribution time (s) |",
        "|---|---:|---:|---:|",
    ]
    ranking = {"control": 1, "ablation": 2}
    for row in sorted(report["rows"], key=lambda r: (ranking.get(r["family"], 0), -r["aopc_comprehensiveness"])):
        name = row["label"] + (" (ablation)" if row["family"] == "ablation" else "")
        lines.append(
            f"| {name} | {row['aopc_comprehensiveness']:.3f} ± {row['aopc_comprehensiveness_sem']:.3f} "
            f"| {row['aopc_sufficiency']:.3f} ± {row['aopc_sufficiency_sem']:.3f} | {row['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"
