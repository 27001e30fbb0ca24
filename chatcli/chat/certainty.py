"""How certain a token looks: the one rule every renderer follows (Rich text, Textual backgrounds).

A step's *uncertainty* runs from 0 (the model was sure) to 1 (the choice was wide open),
read from the raw model distribution so it stays informative under greedy decoding:

* ``"model_prob"``: ``1 - model_prob``, how unlikely the model found the token it gave;
* ``"entropy"``: ``entropy / ENTROPY_FULL_BITS``, clamped (4 bits: 16 equally likely tokens).

An unknown value (NaN: a remote server that reported no probabilities) stays NaN and no
renderer tints it. Up to :data:`CERTAIN` a token counts as certain (green text in Rich,
no background in Textual); above it the colour moves towards red as the uncertainty grows:
through five named colours in Rich (:func:`text_colour`), a continuous amber-to-red
background in Textual (:func:`background_rgba`). Nothing here imports Rich or Textual.
"""

from __future__ import annotations

import math

from chatcli.engine.events import Step

ENTROPY_FULL_BITS = 4.0  # entropy at which a token is as uncertain as it gets
CERTAIN = 0.1  # uncertainty up to which a token counts as certain (no tint)

# Rich text colours by uncertainty: each applies up to its bound (model_prob >= 0.9, 0.6, 0.3, 0.1).
TEXT_BANDS = ((CERTAIN, "green"), (0.4, "chartreuse3"), (0.7, "yellow"), (0.9, "dark_orange"), (math.inf, "red"))

_AMBER = (255, 196, 0)  # the background just above CERTAIN
_RED = (255, 70, 70)  # the background at uncertainty 1


def uncertainty(step: Step, mode: str) -> float:
    """0 (certain) .. 1 (wide open) for the tint ``mode`` ("model_prob" or "entropy"); NaN when unknown."""
    value = step.entropy / ENTROPY_FULL_BITS if mode == "entropy" else 1.0 - step.model_prob
    return value if value != value else max(0.0, min(1.0, value))


def prob_uncertainty(p: float) -> float:
    """The uncertainty of a token the model gave probability ``p`` (NaN stays NaN)."""
    return p if p != p else max(0.0, min(1.0, 1.0 - p))


def text_colour(u: float) -> str:
    """A Rich colour name for uncertainty ``u``; "" (the terminal's own colour) when unknown."""
    if u != u:
        return ""
    return next(colour for bound, colour in TEXT_BANDS if u <= bound)


def background_rgba(u: float) -> tuple[int, int, int, float] | None:
    """A background (red, green, blue, alpha) for uncertainty ``u``: none when certain or unknown,
    amber to red and more opaque as it grows."""
    if not u > CERTAIN:  # also NaN
        return None
    t = (min(u, 1.0) - CERTAIN) / (1.0 - CERTAIN)
    r, g, b = (round(a + (b_ - a) * t) for a, b_ in zip(_AMBER, _RED))
    return r, g, b, 0.18 + 0.5 * t
