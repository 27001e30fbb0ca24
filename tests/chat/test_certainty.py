"""One certainty rule: the REPL's Rich colours and the TUI's backgrounds agree on which tokens look certain."""

from __future__ import annotations

import math

import pytest

from chatcli.chat.certainty import CERTAIN, background_rgba, prob_uncertainty, text_colour, uncertainty
from chatcli.chat.printed_steps import certainty_style, step_style
from chatcli.engine.events import Step
from chatcli.tui.token_text import tint_color, tint_style

NAN = float("nan")


def _step(model_prob: float = 0.5, entropy: float = 1.0) -> Step:
    return Step(index=0, id=1, token="x", text="x", prob=model_prob, model_prob=model_prob, entropy=entropy, top=())


def test_uncertainty_from_probability_and_entropy_clamped_and_unknown_stays_unknown():
    assert uncertainty(_step(model_prob=0.25), "model_prob") == 0.75
    assert uncertainty(_step(entropy=1.0), "entropy") == 0.25
    assert uncertainty(_step(entropy=9.0), "entropy") == 1.0  # beyond 4 bits: as open as it gets
    assert math.isnan(uncertainty(_step(model_prob=NAN), "model_prob"))
    assert math.isnan(uncertainty(_step(entropy=NAN), "entropy"))


@pytest.mark.parametrize("p, colour", [(0.95, "green"), (0.9, "green"), (0.7, "chartreuse3"), (0.6, "chartreuse3"),
                                       (0.45, "yellow"), (0.3, "yellow"), (0.2, "dark_orange"), (0.1, "dark_orange"),
                                       (0.05, "red"), (0.0, "red")])  # fmt: skip
def test_rich_bands_by_probability(p, colour):
    assert certainty_style(p) == colour


def test_both_renderers_agree_on_certain_and_unknown_tokens():
    for k in range(1001):
        u = k / 1000
        rich_certain = text_colour(u) == "green"
        textual_untinted = tint_color(u) is None
        assert rich_certain == textual_untinted == (u <= CERTAIN), u
    assert text_colour(NAN) == "" and tint_color(NAN) is None and background_rgba(NAN) is None
    assert certainty_style(NAN) == "" and math.isnan(prob_uncertainty(NAN))


def test_entropy_tint_of_an_unknown_step_is_no_colour_in_either_renderer():
    # The REPL used to colour an unreported entropy red; both renderers now leave it untinted.
    unknown = _step(model_prob=NAN, entropy=NAN)
    assert step_style(unknown, "entropy") == "" and step_style(unknown, "model_prob") == ""
    assert tint_style(unknown, "entropy") is None and tint_style(unknown, "model_prob") is None
    assert step_style(_step(entropy=4.0), "entropy") == "red" and step_style(_step(model_prob=0.1), "off") == ""


def test_background_grows_from_amber_to_red():
    r0, g0, b0, a0 = background_rgba(CERTAIN + 1e-9)
    r1, g1, b1, a1 = background_rgba(1.0)
    assert (r0, g0, b0) == (255, 196, 0) and (r1, g1, b1) == (255, 70, 70) and a0 < a1
