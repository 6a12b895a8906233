"""Self-contained HTML token heatmaps (no Jupyter, no scripts, no network)."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass

from captum_mamba.visualization.colors import COLOR_MEANING, relevance_rgb, scale_note, scale_of, shared_scale_of


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


def title_phrases(title: str) -> list[str]:
    r"""
    Split a title into the phrases that line wrapping keeps together.

    Phrases are separated by two or more spaces (``"the sentence  ->  positive (p = 0.93)"``); a
    phrase of punctuation only, like ``"->"`` or ``"|"``, is joined to the phrase after it (or, at
    the end, to the one before).

    Args:
        title (str): the title.

    Returns:
        *list[str]*: the phrases, in order (empty for an empty title).
    """
    phrases: list[str] = []
    pending = ""
    for phrase in re.split(r"\s{2,}", title.strip()):
        if not phrase:
            continue
        if not re.search(r"\w", phrase):
            pending = f"{pending} {phrase}".strip()
            continue
        phrases.append(f"{pending} {phrase}".strip())
        pending = ""
    if pending:
        if phrases:
            phrases[-1] += " " + pending
        else:
            phrases.append(pending)
    return phrases


def _title_html(title: str) -> str:
    # phrases are inline blocks: a line breaks between phrases first, and inside a phrase (at
    # spaces) only when the phrase alone is wider than the page
    return "<br>".join(
        " ".join(f'<span class="phrase">{html.escape(p)}</span>' for p in title_phrases(line))
        for line in title.split("\n")
    )


def _row(explanation: TokenExplanation, scale: float, shared: bool) -> str:
    spans = []
    for token, relevance in zip(explanation.tokens, explanation.relevances):
        r, g, b = relevance_rgb(relevance, scale)
        spans.append(
            f'<span class="tok" style="background:rgb({r},{g},{b})" '
            f'title="{html.escape(token)}: {float(relevance):+.4g}">{html.escape(token)}</span>'
        )
    note = "" if shared else f"full colour = ±{scale:.3g}"
    subtitle = "; ".join(part for part in (explanation.subtitle, note) if part)
    return (
        f"<section><h2>{_title_html(explanation.title)}</h2>"
        f'<p class="sub">{html.escape(subtitle)}</p>'
        f'<div class="tokens">{" ".join(spans)}</div></section>'
    )


def heatmap_html(
    explanations: Sequence[TokenExplanation], heading: str = "MambaLRP explanation", shared_scale: bool = False
) -> str:
    r"""
    Render explanations as one HTML page with a colour legend.

    Red marks relevance toward the explained class, blue relevance against it. By default each
    sequence is coloured on its own scale (full colour = its largest ``|relevance|``, shown under its
    title); ``shared_scale=True`` uses one scale for all. The legend states which. Hovering a token
    shows its relevance.

    Args:
        explanations (Sequence[TokenExplanation]): the sequences to show.
        heading (str, optional): the page heading. Default: "MambaLRP explanation"
        shared_scale (bool, optional): one colour scale for all sequences. Default: False

    Returns:
        *str*: a complete HTML document.
    """
    common = shared_scale_of([e.relevances for e in explanations])
    rows = "\n".join(_row(e, common if shared_scale else scale_of(e.relevances), shared_scale) for e in explanations)
    ends = f"{-common:+.3g}", f"{common:+.3g}"
    low, high = ends if shared_scale else ("−max |R|", "+max |R|")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(heading)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 60em; }}
.tok {{ padding: 0.1em 0.25em; border-radius: 0.2em; line-height: 2em; font-family: monospace; }}
.sub {{ color: #555; margin-top: -0.5em; }}
h2 {{ font-size: 1.05em; }}
.phrase {{ display: inline-block; margin-right: 0.6em; }}
.legend {{ font-size: 0.9em; color: #333; }}
.bar {{ display: inline-block; width: 16em; height: 0.9em; vertical-align: middle; border: 1px solid #ccc;
  background: linear-gradient(to right, rgb(0,0,255), rgb(255,255,255), rgb(255,0,0)); }}
</style></head><body>
<h1>{html.escape(heading)}</h1>
<div class="legend"><p>{html.escape(low)} <span class="bar"></span> {html.escape(high)}
&nbsp; relevance ({html.escape(COLOR_MEANING)})</p>
<p>{html.escape(scale_note(shared_scale))}</p></div>
{rows}
</body></html>
"""
