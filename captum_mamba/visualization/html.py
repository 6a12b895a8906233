"""Self-contained HTML token heatmaps (no Jupyter, no scripts, no network)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from captum_mamba.visualization.colors import relevance_rgb, scale_of


@dataclass
class TokenExplanation:
    r"""
    One explained sequence.

    Args:
        tokens (list[str]): the tokens, in order.
        relevances (list[float]): one relevance per token.
        title (str): a heading, e.g. the input and the prediction.
        subtitle (str): a second line, e.g. the convergence delta.
    """

    tokens: Sequence[str]
    relevances: Sequence[float]
    title: str = ""
    subtitle: str = ""


def _row(explanation: TokenExplanation) -> str:
    scale = scale_of(explanation.relevances)
    spans = []
    for token, relevance in zip(explanation.tokens, explanation.relevances):
        r, g, b = relevance_rgb(relevance, scale)
        spans.append(
            f'<span class="tok" style="background:rgb({r},{g},{b})" '
            f'title="{html.escape(token)}: {float(relevance):+.4g}">{html.escape(token)}</span>'
        )
    return (
        f"<section><h2>{html.escape(explanation.title)}</h2>"
        f'<p class="sub">{html.escape(explanation.subtitle)}</p>'
        f'<div class="tokens">{" ".join(spans)}</div></section>'
    )


def heatmap_html(explanations: Sequence[TokenExplanation], heading: str = "MambaLRP explanation") -> str:
    r"""
    Render explanations as one HTML page; each sequence is coloured on its own scale.

    Args:
        explanations (Sequence[TokenExplanation]): the sequences to show.
        heading (str, optional): the page heading.

    Returns:
        *str*: a complete HTML document.
    """
    rows = "\n".join(_row(e) for e in explanations)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(heading)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 60em; }}
.tok {{ padding: 0.1em 0.25em; border-radius: 0.2em; line-height: 2em; font-family: monospace; }}
.sub {{ color: #555; margin-top: -0.5em; }}
h2 {{ font-size: 1.05em; }}
.legend span {{ padding: 0.1em 0.5em; }}
</style></head><body>
<h1>{html.escape(heading)}</h1>
<p class="legend"><span style="background:rgb(80,80,255);color:white">negative</span>
<span style="background:white;border:1px solid #ccc">zero</span>
<span style="background:rgb(255,80,80);color:white">positive</span> relevance for the explained class</p>
{rows}
</body></html>
"""
