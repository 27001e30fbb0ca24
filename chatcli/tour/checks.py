"""How a tour chapter knows the learner did its experiment: the events it watches and the goals they meet.

The tour never reads the screen. It is told what happens in the chat as
:class:`TourEvent` values, from three sources:

* the chat core's listeners (:data:`chatcli.chat.core.Listener`): a message sent
  (``message``), an answer finished (``answer``), an adapter loaded (``adapter``);
* the command registry's observers (:meth:`chatcli.chat.commands.Registry.observe`):
  a slash command that ran without error, with its arguments (``command``);
* the front end, for what only it knows: a step the learner looked at (``step``,
  with its entropy; the TUI sends the token selected in the inspector, the plain
  chat, which prints every token coloured by certainty, sends the surest and the
  least sure step of each answer) and a view of the probability panel opened
  (``view``: "what-if", "lens", "attention", ...).

A chapter's check is a few :class:`Goal` values; each is a plain predicate on one
event, so every check can be tested with synthetic events. A goal with ``after``
counts only once the goal it names is met (train first, then load the result).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

MESSAGE, ANSWER, COMMAND, STEP, VIEW, ADAPTER = "message", "answer", "command", "step", "view", "adapter"

NEAR_CERTAIN_BITS = 0.5  # at most this entropy: the model all but knows the next token
WIDE_OPEN_BITS = 3.0  # at least this: more spread than eight equally likely tokens


@dataclass(frozen=True)
class TourEvent:
    """One thing that happened in the chat, as the tour sees it."""

    kind: str  # MESSAGE | ANSWER | COMMAND | STEP | VIEW | ADAPTER
    name: str = ""  # COMMAND: its name without the slash; VIEW: the view; ADAPTER: the adapter's name
    args: str = ""  # COMMAND: its arguments as given (words joined by spaces)
    text: str = ""  # MESSAGE: the text sent
    entropy: float = math.nan  # STEP: the step's entropy in bits (raw model distribution)
    user_turns: int = 0  # ANSWER: the learner's messages on the conversation's path, the answered one included
    finish: str = ""  # ANSWER: the finish reason ("stop", "length", "cancelled", "error")

    @property
    def words(self) -> list[str]:
        return self.args.split()


Test = Callable[[TourEvent], bool]


@dataclass(frozen=True)
class Goal:
    """One step of a chapter's experiment: ``label`` is what the card shows, ``test`` recognises it."""

    key: str  # stable id, kept in the progress file
    label: str  # a few words, shown with ✓ or ○
    test: Test
    after: str | None = None  # the key of a goal that must be met first


# --- building blocks ------------------------------------------------------------------------------


def command(*names: str, first_word: tuple[str, ...] = ()) -> Test:
    """A slash command ``/name`` ran (one of ``names``); with ``first_word``, its first argument is one of them."""

    def test(e: TourEvent) -> bool:
        if e.kind != COMMAND or e.name not in names:
            return False
        return not first_word or (bool(e.words) and e.words[0].lower() in first_word)

    return test


def view(*names: str) -> Test:
    """A view of the probability panel was opened."""
    return lambda e: e.kind == VIEW and e.name in names


def either(*tests: Test) -> Test:
    return lambda e: any(t(e) for t in tests)


def answer(min_user_turns: int = 1) -> Test:
    """An answer finished (not failed) in a conversation holding at least ``min_user_turns`` of the learner's messages."""
    return lambda e: e.kind == ANSWER and e.finish != "error" and e.user_turns >= min_user_turns


def adapter_loaded(e: TourEvent) -> bool:
    return e.kind == ADAPTER


def near_certain_step(e: TourEvent) -> bool:
    return e.kind == STEP and e.entropy <= NEAR_CERTAIN_BITS


def wide_open_step(e: TourEvent) -> bool:
    return e.kind == STEP and e.entropy >= WIDE_OPEN_BITS


SAMPLING_SETTINGS = ("temperature", "top_p", "top_k", "min_p")
_SETTING_ALIASES = {"temp": "temperature", "t": "temperature", "topp": "top_p", "top-p": "top_p",
                    "topk": "top_k", "top-k": "top_k", "minp": "min_p", "min-p": "min_p"}  # fmt: skip


def sampling_set(e: TourEvent) -> bool:
    """``/set`` changed a setting that reshapes the sampled distribution (temperature, top-p, top-k, min-p)."""
    if e.kind != COMMAND or e.name != "set" or len(e.words) < 2:
        return False
    name = e.words[0].lower()
    return _SETTING_ALIASES.get(name, name) in SAMPLING_SETTINGS


_WIDE_CHAR = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\U0001f000-\U0001faff\u2600-\u27bf]")  # CJK, Hangul, emoji


def tokenized(pattern: re.Pattern[str]) -> Test:
    """``/tokenize TEXT`` ran on a text matching ``pattern``."""
    return lambda e: e.kind == COMMAND and e.name == "tokenize" and bool(pattern.search(e.args))


tokenized_wide_chars = tokenized(_WIDE_CHAR)  # Chinese, Japanese, Korean or an emoji
tokenized_number = tokenized(re.compile(r"\d{3,}"))  # a number of three or more digits
