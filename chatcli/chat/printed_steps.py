"""A compact, printable view of an answer's steps (``generate --show-probs``, the plain REPL).

Colours follow the certainty of the raw model distribution (``model_prob``), so
uncertain steps stand out even under greedy decoding; the rule is the one the TUI
tints with (:mod:`chatcli.chat.certainty`).
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from chatcli.chat.certainty import prob_uncertainty, text_colour, uncertainty
from chatcli.engine.events import Step


def certainty_style(p: float) -> str:
    """The Rich style of a token the model gave probability ``p`` (:mod:`chatcli.chat.certainty`):
    green for near-certain, through yellow, to red for wide open; none when unknown (NaN)."""
    return text_colour(prob_uncertainty(p))


def step_style(step: Step, tint: str) -> str:
    """The Rich style of an answer's step under the tint ``tint`` ("model_prob", "entropy" or "off")."""
    return "" if tint == "off" else text_colour(uncertainty(step, tint))


_VISIBLE = str.maketrans({" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"})


def show_token(token: str) -> str:
    """Make a token's whitespace visible (a leading space is part of most English tokens)."""
    shown = token.translate(_VISIBLE)
    return shown if shown.isprintable() else repr(shown)[1:-1]


def tinted_answer(steps: Sequence[Step]) -> Text:
    text = Text()
    for s in steps:
        text.append(s.text, style=certainty_style(s.model_prob))
    return text


def steps_table(steps: Sequence[Step], alternatives: int = 4) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name, justify in (("#", "right"), ("token", "left"), ("prob", "right"),
                          ("model", "right"), ("H bits", "right"), ("alternatives (model prob)", "left")):
        table.add_column(name, justify=justify)
    for s in steps:
        alts = Text()
        for t in [t for t in s.top if t.id != s.id][:alternatives]:
            alts.append(f"{show_token(t.token)} ", style="bold")
            alts.append(f"{_pct(t.model_prob)}  ", style="dim")
        table.add_row(
            str(s.index),
            Text(show_token(s.token), style=certainty_style(s.model_prob)),
            _pct(s.prob),
            _pct(s.model_prob),
            "–" if s.entropy != s.entropy else f"{s.entropy:.2f}" + ("*" if s.partial else ""),
            alts,
        )
    return table


def _pct(p: float) -> str:
    return "–" if p != p else f"{p:.1%}"  # NaN: not reported by a remote server


def print_steps(steps: Sequence[Step], console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    console.print(steps_table(steps))
