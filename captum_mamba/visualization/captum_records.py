"""Bridges to Captum's text visualizer (``captum.attr.visualization.visualize_text``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from captum.attr import visualization
from torch import Tensor


def visualization_record(
    tokens: Sequence[str],
    relevances: Tensor | Sequence[float],
    predicted_probability: float,
    predicted_label: str | int,
    true_label: str | int | None = None,
    attributed_label: str | int | None = None,
    convergence_delta: float = 0.0,
) -> visualization.VisualizationDataRecord:
    r"""
    A Captum ``VisualizationDataRecord`` from one explained sequence.

    Args:
        tokens (Sequence[str]): the tokens.
        relevances (Tensor or Sequence[float]): one relevance per token (e.g.
                    ``MambaLRP(...).attribute(embeds)[i].sum(-1)``), or per embedding
                    dimension ``(length, hidden)``, summed here.
        predicted_probability (float): the model's probability of its prediction.
        predicted_label (str or int): the prediction.
        true_label (str or int, optional): the label, if known. Default: ``predicted_label``
        attributed_label (str or int, optional): the explained class. Default: ``predicted_label``
        convergence_delta (float, optional): MambaLRP's convergence delta. Default: 0.0

    Returns:
        *VisualizationDataRecord* for ``visualize_text``; its ``attr_score`` is the sum of the
        relevances (for MambaLRP: the explained logit plus the convergence delta).
    """
    scores = torch.as_tensor(relevances, dtype=torch.float64).detach().cpu()
    if scores.dim() == 2:
        scores = scores.sum(-1)
    if scores.dim() != 1 or scores.numel() != len(tokens):
        raise ValueError(
            f"need one relevance per token: {len(tokens)} tokens, relevances of shape {tuple(scores.shape)}"
        )
    return visualization.VisualizationDataRecord(
        scores,
        float(predicted_probability),
        predicted_label,
        predicted_label if true_label is None else true_label,
        predicted_label if attributed_label is None else attributed_label,
        float(scores.sum()),
        list(tokens),
        float(convergence_delta),
    )


def visualize_text(records: Sequence[visualization.VisualizationDataRecord], legend: bool = True) -> Any:
    r"""
    Captum's ``visualize_text`` on the records (needs IPython); returns its HTML object, whose
    ``.data`` is the HTML text, also outside Jupyter.

    Args:
        records (Sequence[VisualizationDataRecord]): from :func:`visualization_record`.
        legend (bool, optional): show Captum's colour legend. Default: True
    """
    return visualization.visualize_text(list(records), legend=legend)
