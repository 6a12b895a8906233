"""The diverging colour scale shared by all renderings: red positive, blue negative, white zero."""

from __future__ import annotations

from collections.abc import Sequence

#: What the two colours mean, for legends.
COLOR_MEANING = "red: toward the explained class, blue: against it, white: zero"


def scale_of(relevances: Sequence[float]) -> float:
    """The largest absolute relevance (1.0 when all are zero), so colours are centred at zero."""
    largest = max((abs(float(r)) for r in relevances), default=0.0)
    return largest if largest > 0 else 1.0


def shared_scale_of(rows: Sequence[Sequence[float]]) -> float:
    """The largest absolute relevance over several sequences (1.0 when all are zero)."""
    return scale_of([value for row in rows for value in row])


def scale_note(shared: bool) -> str:
    r"""
    The sentence that states how colours are scaled, for legends.

    Args:
        shared (bool): whether all sequences share one scale.

    Returns:
        *str*: e.g. ``"colours scaled to the largest |relevance| of each sentence"``.
    """
    if shared:
        return "one scale for all sentences: full colour = the largest |relevance| of any sentence"
    return "colours scaled to the largest |relevance| of each sentence (full colour = ±that value)"


def relevance_rgb(value: float, scale: float) -> tuple[int, int, int]:
    """RGB of one relevance on a white-centred red/blue scale."""
    strength = max(-1.0, min(1.0, float(value) / scale))
    fade = int(round(255 * (1 - abs(strength))))
    return (255, fade, fade) if strength >= 0 else (fade, fade, 255)
