"""The comparison data: every method's token scores, conservation delta, runtime and faithfulness per text,
and, for models with several layer kinds (hybrids), how the explained logit's relevance splits across
their layers and kinds."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from captum_mamba.compare.text_model import ComparisonInputError, TextModel
from captum_mamba.evaluation.flipping import flipping_curves
from captum_mamba.evaluation.linear_time import linear_time_forward
from captum_mamba.evaluation.methods import METHODS, ExplainedLogits, token_attributions
from captum_mamba.relevance_split import kind_totals, model_layer_kinds, relevance_split

SPLIT_METHODS: tuple[str, ...] = ("mamba_lrp", "mamba_lrp_cp")
"""The methods whose relevance split by layer is shown for hybrids (AttnLRP and CP-LRP for attention)."""

DEFAULT_COMPARE_METHODS: tuple[str, ...] = (
    "mamba_lrp",
    "integrated_gradients",
    "smoothgrad",
    "input_x_gradient",
    "saliency",
    "naive_lrp",
)
"""The rows shown by default: MambaLRP and the baselines users compare it with; any name of
:data:`~captum_mamba.evaluation.METHODS` can be added."""


@dataclass
class MethodRow:
    r"""
    One method's explanation of one text.

    Args:
        name (str): registry name (``"mamba_lrp"``).
        label (str): display name (``"MambaLRP"``).
        description (str): one line on what the method does.
        scores (list[float]): one score per token (empty if the method failed).
        delta (float or None): sum of the token scores minus the explained logit; None for
                    methods whose scores are not additive (unsigned norms, rollouts, occlusion).
        seconds (float): attribution wall time.
        delta_af (float or None): ΔA^F of this text (token flipping, zero embedding).
        fractions (list[float]): x-axis of the perturbation curves.
        morf (list[float]): logit after removing the most relevant tokens first.
        lerf (list[float]): logit after removing the least relevant tokens first.
        error (str or None): why the method could not explain this text.
        top1 (int or None): the position of the highest score (a held explained position
                    excluded); set for inputs with a known source.
        top1_is_source (bool or None): whether ``top1`` is the known source; None without one.
    """

    name: str
    label: str
    description: str
    scores: list[float] = field(default_factory=list)
    delta: float | None = None
    seconds: float = 0.0
    delta_af: float | None = None
    fractions: list[float] = field(default_factory=list)
    morf: list[float] = field(default_factory=list)
    lerf: list[float] = field(default_factory=list)
    error: str | None = None
    top1: int | None = None
    top1_is_source: bool | None = None


def check_methods(methods: Sequence[str]) -> list[str]:
    r"""
    Validate method names against :data:`~captum_mamba.evaluation.METHODS`.

    Raises:
        ComparisonInputError: no method, or an unknown name (the message lists the known ones).
    """
    methods = list(methods)
    if not methods:
        raise ComparisonInputError("choose at least one attribution method")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ComparisonInputError(
            f"unknown attribution method{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"known methods: {', '.join(sorted(METHODS))}"
        )
    return methods


def compare_text(
    text_model: TextModel,
    text: str,
    methods: Sequence[str] = DEFAULT_COMPARE_METHODS,
    label: str | None = None,
    steps: int = 10,
) -> dict[str, Any]:
    r"""
    Explain the model's prediction on ``text`` with several methods, side by side.

    Args:
        text_model (TextModel): model, tokenizer and class names.
        text (str): the input.
        methods (Sequence[str], optional): names in :data:`~captum_mamba.evaluation.METHODS`.
                    Default: :data:`DEFAULT_COMPARE_METHODS`
        label (str, optional): the true label, shown next to the prediction.
        steps (int, optional): points of the perturbation curves minus one. Default: 10

    Returns:
        *dict* (JSON-ready): ``text``, ``tokens``, ``label``, ``prediction`` (index, name,
        probability, logit), ``top_classes``, ``methods``, a list of :class:`MethodRow` dicts,
        ``relevance_split`` (see :func:`layer_split`; ``None`` for models with one layer kind),
        ``source`` (``{"position", "token"}``, the known source of :attr:`TextModel.known_source`,
        or ``None``) and ``explained_position`` (the last position for a
        :attr:`TextModel.hold_last` model, else ``None``). With a known source, ``label`` defaults
        to its token (the output the model should give) and each row has ``top1`` and
        ``top1_is_source``.

    Raises:
        ComparisonInputError: empty, too long or malformed text, unknown method.
    """
    methods = check_methods(methods)
    input_ids, tokens = text_model.encode(text)
    model = text_model.model
    token_ids = input_ids[0].tolist()
    source = None if text_model.known_source is None else text_model.known_source(token_ids)
    if source is not None and label is None:
        label = text_model.class_name(token_ids[source])
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    mask = torch.ones_like(input_ids)
    forward = ExplainedLogits(model)
    embeds = model.get_input_embeddings()(input_ids).detach()
    with torch.no_grad():
        raw = forward(embeds, mask)[0]
    logits = raw.float()
    probabilities = logits.softmax(-1)
    target = int(raw.argmax())
    logit = float(raw[target])  # in the model's precision: the conservation delta of a float64 model
    top = probabilities.topk(min(4, probabilities.numel()))
    rows = [_explain(text_model, name, input_ids, mask, embeds, target, logit, steps) for name in methods]
    if source is not None:
        for row in rows:
            _mark_top1(row, source, text_model.hold_last)
    return {
        "text": text,
        "tokens": tokens,
        "label": label,
        "prediction": {
            "index": target,
            "name": text_model.class_name(target),
            "probability": float(probabilities[target]),
            "logit": logit,
        },
        "top_classes": [
            {"name": text_model.class_name(int(i)), "probability": float(p)} for p, i in zip(top.values, top.indices)
        ],
        "methods": [asdict(row) for row in rows],
        "relevance_split": layer_split(model, embeds, mask, target),
        "source": None if source is None else {"position": source, "token": tokens[source]},
        "explained_position": len(tokens) - 1 if text_model.hold_last else None,
    }


def _mark_top1(row: MethodRow, source: int, hold_last: bool) -> None:
    """Set the row's top-1 position (the held explained position excluded) and whether it is ``source``."""
    scores = row.scores[:-1] if hold_last else row.scores
    if not scores:
        return
    row.top1 = max(range(len(scores)), key=scores.__getitem__)  # the first of equal maxima, as torch.argmax
    row.top1_is_source = row.top1 == source


def layer_split(
    model: torch.nn.Module,
    embeds: torch.Tensor,
    mask: torch.Tensor,
    target: int,
    methods: Sequence[str] = SPLIT_METHODS,
) -> dict[str, Any] | None:
    r"""
    How the explained logit's relevance splits across the layers and layer kinds of a model with
    several kinds (SSM mixers, attention, MLPs), by :func:`~captum_mamba.relevance_split`.

    Each module's relevance is the share of the explained logit that flows through its update
    (the rest of its layer's relevance passes the skip connection); the shares of successive
    layers are nested, so they do not add up to the logit.

    Args:
        model (nn.Module): the model.
        embeds (Tensor): ``(1, length, hidden)`` input embeddings of one text.
        mask (Tensor): ``(1, length)`` attention mask.
        target (int): the explained class.
        methods (Sequence[str], optional): MambaLRP methods of :data:`~captum_mamba.evaluation.METHODS`
                    whose rules are used. Default: :data:`SPLIT_METHODS`

    Returns:
        *dict* (JSON-ready) with ``logit``, ``methods`` (``[{"name", "label"}]``), ``rows``
        (``[{"module", "layer", "kind", "relevance": {method: value}}]``, in the order the modules
        run) and ``kinds`` (``[{"kind", "relevance": {method: value}}]``, the sums per kind);
        ``None`` when the model has fewer than two layer kinds or a method fails (the error is
        then in ``error``).
    """
    forward = ExplainedLogits(model)
    target_tensor = torch.tensor([target], device=embeds.device)
    explainers = {name: METHODS[name].build(forward, model) for name in methods}
    first = next(iter(explainers.values()), None)
    if first is None or len(model_layer_kinds(first)) < 2:
        return None
    with torch.no_grad():
        logit = float(forward(embeds, mask)[0, target])
    split: dict[str, Any] = {
        "logit": logit,
        "methods": [{"name": name, "label": METHODS[name].label} for name in methods],
        "rows": [],
        "kinds": [],
    }
    try:
        per_method = {
            name: relevance_split(explainer, embeds, target=target_tensor, additional_forward_args=(mask,))
            for name, explainer in explainers.items()
        }
    except Exception as error:  # the split is extra information: never hide the explanations
        split["error"] = f"{type(error).__name__}: {error}"
        return split
    by_module = {name: {row.module: row for row in rows} for name, rows in per_method.items()}
    for row in per_method[methods[0]]:
        values = {name: float(rows[row.module].relevance[0]) for name, rows in by_module.items()}
        split["rows"].append({"module": row.module, "layer": row.layer, "kind": row.kind, "relevance": values})
    totals = {name: kind_totals(rows) for name, rows in per_method.items()}
    for kind in totals[methods[0]]:
        split["kinds"].append({"kind": kind, "relevance": {name: float(t[kind][0]) for name, t in totals.items()}})
    return split


def _explain(
    text_model: TextModel,
    name: str,
    input_ids: torch.Tensor,
    mask: torch.Tensor,
    embeds: torch.Tensor,
    target: int,
    logit: float,
    steps: int,
) -> MethodRow:
    spec = METHODS[name]
    row = MethodRow(name, spec.label, spec.description)
    reason = spec.why_unsupported(text_model.model)
    if reason is not None:
        row.error = f"not applicable to this model: {reason}"
        return row
    target_tensor = torch.tensor([target], device=input_ids.device)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            # the baselines differentiate the unmodified model; linear_time_forward gives them the
            # same gradients in linear time (Hugging Face's CPU backward is quadratic in length)
            own_rules = spec.family in ("lrp", "ablation")
            with nullcontext() if own_rules else linear_time_forward(text_model.model):
                start = time.perf_counter()
                scores = token_attributions(spec, text_model.model, input_ids, target_tensor, mask)
                row.seconds = time.perf_counter() - start
    except Exception as error:  # one failing method (e.g. a length guard) must not hide the others
        row.error = f"{type(error).__name__}: {error}"
        return row
    row.scores = [float(s) for s in scores[0]]
    if spec.reduction == "sum" and spec.family != "attention":
        row.delta = float(scores.sum()) - logit
    changeable, count = None, len(row.scores)
    if text_model.hold_last:  # a causal LM's explained position is held, as in ``evaluate copying``
        changeable = torch.ones(input_ids.shape, dtype=torch.bool, device=input_ids.device)
        changeable[:, -1] = False
        count -= 1
    if count == 0:
        return row
    with linear_time_forward(text_model.model):
        result = flipping_curves(
            ExplainedLogits(text_model.model),
            embeds,
            scores.to(embeds.dtype),
            target_tensor,
            mask,
            steps=min(steps, count),
            changeable=changeable,
        )
    row.delta_af = float(result.delta_af[0])
    row.fractions = [float(f) for f in result.fractions]
    row.morf = [float(v) for v in result.morf[0]]
    row.lerf = [float(v) for v in result.lerf[0]]
    return row


def method_catalogue(methods: Sequence[str] | None = None) -> list[dict[str, str]]:
    r"""
    Name, label, description and family of methods (default: every registered one).

    Returns:
        *list[dict]*, in the order given (registry order by default).
    """
    names = list(METHODS) if methods is None else check_methods(methods)
    return [
        {
            "name": n,
            "label": METHODS[n].label,
            "description": METHODS[n].description,
            "family": METHODS[n].family,
        }
        for n in names
    ]
