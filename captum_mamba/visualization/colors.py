"""The diverging colour scale shared by all renderings: red positive, blue negative, white zero."""

from __future__ import annotations

from collections.abc import Sequence


def scale_of(relevances: Sequence[float]) -> float:
    """The largest absolute relevance (1.0 when all are zero), so colours are centred at zero."""
    largest = max((abs(float(r)) for r in relevances), default=0.0)
    return largest if largest > 0 else 1.0


def relevance_rgb(value: float, scale: float) -> tuple[int, int, int]:
    """RGB of one relevance on a white-centred red/blue scale."""
    strength = max(-1.0, min(1.0, float(value) / scale))
    fade = int(round(255 * (1 - abs(strength))))
    return (255, fade, fade) if strength >= 0 else (fade, fade, 255)
