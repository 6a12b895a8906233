"""Matplotlib token heatmaps: tokens as coloured boxes, wrapped into lines, with a colour legend."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.cm import ScalarMappable
from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.figure import Figure

from captum_mamba.visualization.colors import COLOR_MEANING, relevance_rgb, scale_note, scale_of, shared_scale_of
from captum_mamba.visualization.html import TokenExplanation, title_phrases

#: The colour map of :func:`captum_mamba.visualization.colors.relevance_rgb` (blue, white, red).
RELEVANCE_CMAP = LinearSegmentedColormap.from_list("relevance", [(0.0, 0.0, 1.0), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0)])

#: The label of the colour bar under every heatmap.
COLORBAR_LABEL = "relevance (" + COLOR_MEANING + ")"


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


def _ellipsize(line: str, width: int) -> str:
    if len(line) + 1 <= width:
        return line + "…"
    cut = line[: max(width - 1, 1)]
    if " " in cut.strip():
        cut = cut[: cut.rstrip().rfind(" ")]
    return cut.rstrip() + "…"


def wrap_title(title: str, width: int, max_lines: int = 3) -> list[str]:
    r"""
    Wrap a title into lines of at most ``width`` characters without breaking a phrase or a word.

    Phrases are the parts of the title separated by two or more spaces (see
    :func:`captum_mamba.visualization.html.title_phrases`). A phrase that fits on a line is never
    split; a longer one is wrapped at spaces. A newline in the title always starts a new line.
    Lines beyond ``max_lines`` are dropped and the last kept line ends with an ellipsis.

    Args:
        title (str): the title.
        width (int): characters per line.
        max_lines (int, optional): the most lines to keep. Default: 3

    Returns:
        *list[str]*: the lines (``[""]`` for an empty title).
    """
    lines: list[str] = []
    for paragraph in title.split("\n"):
        lines.extend(_wrap_paragraph(paragraph, width))
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [_ellipsize(lines[max_lines - 1], width)]
    return lines or [""]


def _wrap_paragraph(paragraph: str, width: int) -> list[str]:
    lines: list[str] = []
    for phrase in title_phrases(paragraph):
        if lines and len(lines[-1]) + 2 + len(phrase) <= width:
            lines[-1] += "  " + phrase
        elif len(phrase) <= width:
            lines.append(phrase)
        else:
            pieces = textwrap.wrap(phrase, width, break_long_words=False, break_on_hyphens=False)
            lines.extend(piece if len(piece) <= width else _ellipsize(piece[: width - 1], width) for piece in pieces)
    return lines


class HeatmapFigure(Figure):
    """A matplotlib ``Figure`` that Jupyter shows as PNG even when pyplot was never imported."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()


_TOKEN_POINTS = 8.0
_CHAR_INCHES = _TOKEN_POINTS * 0.6 / 72  # advance of one monospace character
_LINE_INCHES = 0.3
_LEGEND_INCHES = 0.85


def _add_legend(figure: Figure, legend_fraction: float, shared: bool, scale: float, width: int) -> None:
    bar = figure.add_axes((0.08, legend_fraction * 0.55, 0.5, legend_fraction * 0.12))
    mappable = ScalarMappable(norm=Normalize(-1.0, 1.0), cmap=RELEVANCE_CMAP)
    colorbar = figure.colorbar(mappable, cax=bar, orientation="horizontal")
    colorbar.set_ticks([-1.0, 0.0, 1.0])
    if shared:
        colorbar.set_ticklabels([f"{-scale:+.3g}", "0", f"{scale:+.3g}"])
    else:
        colorbar.set_ticklabels(["−max |R|", "0", "+max |R|"])
    colorbar.ax.tick_params(labelsize=6, length=2, pad=1)
    colorbar.ax.xaxis.set_label_position("top")
    colorbar.set_label(COLORBAR_LABEL, fontsize=6.5, labelpad=3, loc="left")
    note = textwrap.wrap(scale_note(shared), int(width * 1.3), break_long_words=False)
    for i, line in enumerate(note):
        figure.text(0.01, legend_fraction * (0.2 - 0.16 * i), line, fontsize=6.5, color="#333", va="center")


def heatmap_figure(
    explanations: Sequence[TokenExplanation], width: int = 70, shared_scale: bool = False, legend: bool = True
) -> Figure:
    r"""
    Draw explanations one under another, with a colour legend underneath.

    Red marks relevance toward the explained class, blue relevance against it. By default each
    sequence is coloured on its own zero-centred scale (full colour = its largest ``|relevance|``,
    printed under its title); ``shared_scale=True`` puts all sequences on one scale, so that colours
    compare across them. The legend states which. Titles are wrapped at phrase and word boundaries
    (see :func:`wrap_title`).

    Args:
        explanations (Sequence[TokenExplanation]): the sequences to draw.
        width (int, optional): characters per line before wrapping. Default: 70
        shared_scale (bool, optional): one colour scale for all sequences. Default: False
        legend (bool, optional): draw the colour bar and the scale note. Default: True

    Returns:
        *Figure*: the matplotlib figure; its first axes hold the tokens, the second the colour bar.
    """
    common = shared_scale_of([e.relevances for e in explanations]) if shared_scale else None
    layout = []
    for explanation in explanations:
        scale = common if common is not None else scale_of(explanation.relevances)
        note = "" if shared_scale else f"full colour = ±{scale:.3g}"
        subtitle = "; ".join(part for part in (explanation.subtitle, note) if part)
        sub_lines = textwrap.wrap(subtitle, int(width * 1.15), break_long_words=False) if subtitle else []
        title_lines = wrap_title(explanation.title, width) if explanation.title else []
        layout.append((explanation, scale, title_lines, sub_lines, _wrap(explanation.tokens, width)))
    line_count = sum(0.8 * (len(t) + len(s)) + len(lines) + 0.9 for _, _, t, s, lines in layout) + 0.2
    content = _LINE_INCHES * line_count + 0.1
    extra = _LEGEND_INCHES if legend else 0.0
    # a bare Figure, not pyplot's: no backend is chosen, and notebooks show it once (as the cell's value)
    figure = HeatmapFigure(figsize=((width + 2) * _CHAR_INCHES, content + extra))
    fraction = extra / (content + extra)
    axis = figure.add_axes((0, fraction, 1, 1 - fraction))
    axis.set_xlim(0, width + 2)
    axis.set_ylim(line_count, 0)
    axis.axis("off")
    row = 0.6
    for explanation, scale, title_lines, sub_lines, lines in layout:
        for title_line in title_lines:
            axis.text(0.5, row, title_line, fontsize=8, weight="bold", va="center")
            row += 0.8
        for sub_line in sub_lines:
            axis.text(0.5, row, sub_line, fontsize=7, color="#555", va="center")
            row += 0.8
        row += 0.2
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
        row += 0.7
    if legend:
        _add_legend(figure, fraction, shared_scale, common or 1.0, width)
    return figure


def compare_methods_figure(
    tokens: Sequence[str], relevances: Mapping[str, Sequence[float]], title: str = "", width: int = 70
) -> Figure:
    r"""
    One sequence explained by several methods, one block per method (each on its own
    zero-centred scale, since methods' relevances differ in units), with a colour legend.

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
        TokenExplanation(tokens, [float(v) for v in values], title=(f"{title}\n" if title and i == 0 else "") + method)
        for i, (method, values) in enumerate(relevances.items())
    ]
    return heatmap_figure(rows, width)


def save_heatmap(
    explanations: Sequence[TokenExplanation],
    path: str | Path,
    width: int = 70,
    shared_scale: bool = False,
    dpi: int = 150,
) -> Path:
    r"""
    Save a token heatmap (with its colour legend) as PNG, SVG or PDF (by the file suffix).

    Args:
        explanations (Sequence[TokenExplanation]): the sequences to draw.
        path (str or Path): the output file.
        width (int, optional): characters per line. Default: 70
        shared_scale (bool, optional): one colour scale for all sequences. Default: False
        dpi (int, optional): resolution of raster output. Default: 150

    Returns:
        *Path*: the written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = heatmap_figure(explanations, width, shared_scale=shared_scale)
    figure.savefig(path, dpi=dpi)
    return path
