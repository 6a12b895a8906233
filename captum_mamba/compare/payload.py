"""The comparison data: every method's token scores, conservation delta, runtime and faithfulness per text."""

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
        probability, logit), ``top_classes`` and ``methods``, a list of :class:`MethodRow` dicts.

    Raises:
        ComparisonInputError: empty or too long text, unknown method.
    """
    methods = check_methods(methods)
    input_ids, tokens = text_model.encode(text)
    model = text_model.model
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    mask = torch.ones_like(input_ids)
    forward = ExplainedLogits(model)
    embeds = model.get_input_embeddings()(input_ids).detach()
    with torch.no_grad():
        logits = forward(embeds, mask)[0].float()
    probabilities = logits.softmax(-1)
    target = int(logits.argmax())
    top = probabilities.topk(min(4, probabilities.numel()))
    rows = [
        _explain(text_model, name, input_ids, mask, embeds, target, float(logits[target]), steps) for name in methods
    ]
    return {
        "text": text,
        "tokens": tokens,
        "label": label,
        "prediction": {
            "index": target,
            "name": text_model.class_name(target),
            "probability": float(probabilities[target]),
            "logit": float(logits[target]),
        },
        "top_classes": [
            {"name": text_model.class_name(int(i)), "probability": float(p)} for p, i in zip(top.values, top.indices)
        ],
        "methods": [asdict(row) for row in rows],
    }


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
    with linear_time_forward(text_model.model):
        result = flipping_curves(
            ExplainedLogits(text_model.model), embeds, scores, target_tensor, mask, steps=min(steps, len(row.scores))
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
