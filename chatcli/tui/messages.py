"""App-wide messages: what workers and widgets post up to the app (state flows back down)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message

from chatcli.engine.events import Done


@dataclass
class LoadProgress(Message):
    stage: str
    done: int
    total: int | None


@dataclass
class EngineLoaded(Message):
    engine: Any  # a ChatEngine


@dataclass
class EngineFailed(Message):
    error: str


@dataclass
class StreamTick(Message):
    """New steps are in the streaming answer: render them (coalesced: at most one pending)."""

    node_id: int


@dataclass
class StreamDone(Message):
    node_id: int
    done: Done


@dataclass
class EngineNotice(Message):
    text: str
    kind: str = "info"


@dataclass
class TokenSelected(Message):
    """A token of an answer got the cursor: show its step in the panel."""

    node_id: int
    index: int


@dataclass
class BranchRequested(Message):
    node_id: int
    index: int
    token_id: int


@dataclass
class SiblingRequested(Message):
    node_id: int
    delta: int


@dataclass
class PickAlternative(Message):
    """Enter on an answer: move to the panel's alternatives to branch with one."""


@dataclass
class LeaveAlternatives(Message):
    """Esc in the panel's alternatives: back to the answer being inspected (or the prompt)."""


@dataclass
class StatusHint(Message):
    """A passing one-line hint for the status bar (``]`` past the last uncertain token...)."""

    text: str
