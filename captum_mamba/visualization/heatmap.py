"""Matplotlib token heatmaps: tokens as coloured boxes, wrapped into lines."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from captum_mamba.visualization.colors import relevance_rgb, scale_of  # noqa: E402
from captum_mamba.visualization.html import TokenExplanation  # noqa: E402


def _wrap(tokens: Sequence[str], width: int) -> list[list[int]]:
    lines: list[list[int]] = [[]]
    used = 0
    for index, token in enumerate(tokens):
        size = len(token) + 1
        if lines[-1] and used + size > width:
            lines.append([])
            used = 0
        lines[-1].append(index)
        used += size
    return lines


_TOKEN_POINTS = 8.0
_CHAR_INCHES = _TOKEN_POINTS * 0.6 / 72  # advance of one monospace character
_LINE_INCHES = 0.3


def heatmap_figure(explanations: Sequence[TokenExplanation], width: int = 70) -> Figure:
    r"""
    Draw explanations one under another; each sequence is coloured on its own zero-centred scale.

    Args:
        explanations (Sequence[TokenExplanation]): the sequences to draw.
        width (int, optional): characters per line before wrapping. Default: 70

    Returns:
        *Figure*: the matplotlib figure.
    """
    layout = [(e, textwrap.wrap(e.title, width) or [""], _wrap(e.tokens, width)) for e in explanations]
    line_count = sum(len(title) + len(lines) + 1.6 for _, title, lines in layout)
    figure = plt.figure(figsize=((width + 2) * _CHAR_INCHES, _LINE_INCHES * line_count + 0.2))
    axis = figure.add_axes((0, 0, 1, 1))
    axis.set_xlim(0, width + 2)
    axis.set_ylim(line_count + 0.3, 0)
    axis.axis("off")
    row = 0.6
    for explanation, title_lines, lines in layout:
        for title_line in title_lines:
            axis.text(0.5, row, title_line, fontsize=8, weight="bold", va="center")
            row += 0.8
        if explanation.subtitle:
            axis.text(0.5, row, explanation.subtitle, fontsize=7, color="#555", va="center")
        row += 1
        scale = scale_of(explanation.relevances)
        for line in lines:
            column = 0.5
            for index in line:
                token = explanation.tokens[index]
                r, g, b = relevance_rgb(explanation.relevances[index], scale)
                axis.text(
                    column,
                    row,
                    token,
                    fontsize=_TOKEN_POINTS,
                    family="monospace",
                    va="center",
                    bbox=dict(boxstyle="round,pad=0.15", facecolor=(r / 255, g / 255, b / 255), edgecolor="none"),
                )
                column += len(token) + 1
            row += 1
        row += 0.6
    return figure


def compare_methods_figure(
    tokens: Sequence[str], relevances: Mapping[str, Sequence[float]], title: str = "", width: int = 70
) -> Figure:
    r"""
    One sequence explained by several methods, one block per method (each on its own
    zero-centred scale, since methods' relevances differ in units).

    Args:
        tokens (Sequence[str]): the tokens.
        relevances (Mapping[str, Sequence[float]]): ``{method name: one relevance per token}``.
        title (str, optional): a heading above the first method. Default: ""
        width (int, optional): characters per line before wrapping. Default: 70

    Returns:
        *Figure*: the matplotlib figure (save it with ``figure.savefig("x.png")`` or ``.svg``).
    """
    for method, values in relevances.items():
        if len(values) != len(tokens):
            raise ValueError(f"{method}: {len(values)} relevances for {len(tokens)} tokens")
    rows = [
        TokenExplanation(
            tokens, [float(v) for v in values], title=(f"{title}  |  " if title and i == 0 else "") + method
        )
        for i, (method, values) in enumerate(relevances.items())
    ]
    return heatmap_figure(rows, width)


def save_heatmap(explanations: Sequence[TokenExplanation], path: str | Path, width: int = 70) -> Path:
    r"""
    Save a token heatmap as PNG, SVG or PDF (by the file suffix).

    Args:
        explanations (Sequence[TokenExplanation]): the sequences to draw.
        path (str or Path): the output file.
        width (int, optional): characters per line. Default: 70

    Returns:
        *Path*: the written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = heatmap_figure(explanations, width)
    figure.savefig(path, dpi=150)
    plt.close(figure)
    return path
