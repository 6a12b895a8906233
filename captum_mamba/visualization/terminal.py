"""Token relevances in a terminal: ANSI 24-bit background colours on the shared diverging scale."""

from __future__ import annotations

from captum_mamba.visualization.colors import relevance_rgb, scale_of
from captum_mamba.visualization.html import TokenExplanation

_RESET = "\x1b[0m"


def render_terminal(explanation: TokenExplanation, color: bool = True, width: int = 100) -> str:
    r"""
    Render one explanation as text for a terminal.

    Args:
        explanation (TokenExplanation): tokens and relevances (and a title).
        color (bool, optional): ANSI colours (red positive, blue negative, white zero); without
                    them each token is followed by its relevance, e.g. ``film[+0.42]``.
                    Default: True
        width (int, optional): characters per line before wrapping (colour codes excluded).
                    Default: 100

    Returns:
        *str*: the rendering, lines separated by ``\n``.
    """
    scale = scale_of(explanation.relevances)
    lines = [explanation.title] if explanation.title else []
    line, used = [], 0
    for token, relevance in zip(explanation.tokens, explanation.relevances):
        shown = token if color else f"{token}[{float(relevance):+.2f}]"
        if line and used + len(shown) + 1 > width:
            lines.append(" ".join(line))
            line, used = [], 0
        if color:
            r, g, b = relevance_rgb(relevance, scale)
            shown = f"\x1b[48;2;{r};{g};{b}m\x1b[38;2;0;0;0m{token}{_RESET}"
        line.append(shown)
        used += len(token if color else shown) + 1
    if line:
        lines.append(" ".join(line))
    if explanation.subtitle:
        lines.append(explanation.subtitle)
    return "\n".join(lines)
