"""The engine as front ends see it: one loaded model that answers conversations.

:class:`ChatEngine` is the protocol the TUI, the plain REPL, the CLI and plugins
program against; :class:`chatcli.engine.loader.LoadedModel` implements it on the
native PyTorch model, and tests use fakes with the same surface.

Messages are plain dicts ``{"role": "system"|"user"|"assistant", "content": str}``.
Every stream yields :class:`~chatcli.engine.events.Step` events, possibly
:class:`~chatcli.engine.events.Notice` events (e.g. older turns dropped to fit
the context), and ends with exactly one :class:`~chatcli.engine.events.Done`.
Calls are not re-entrant: one stream at a time per engine (front ends run it in a
worker thread and stop it with ``cancel``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from chatcli.engine.events import Event
from chatcli.engine.params import SamplingParams

Message = dict  # {"role": ..., "content": ...}


@dataclass(frozen=True)
class ModelIdentity:
    name: str  # what the person asked for ("smollm2-135m-instruct", a path, "hf:org/name")
    path: str  # the local checkpoint directory
    model_type: str
    sha256: str | None  # of the weights, from the cache manifest when known
    dtype: str
    device: str
    context_length: int
    parameters: int


class ChatEngine(Protocol):
    identity: ModelIdentity

    def render_prompt(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """The exact string the model sees for ``messages`` (special tokens included)."""

    def count_tokens(self, text: str) -> int: ...

    def chat(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        cancel: threading.Event | None = None,
        answer_prefix_ids: Sequence[int] = (),
    ) -> Iterator[Event]:
        """Answer the conversation. ``answer_prefix_ids`` are assistant tokens already
        decided (``/continue`` of a stopped answer, or a branch with a forced token):
        the answer continues after them and only new tokens become steps."""

    def complete(
        self, text: str, params: SamplingParams, cancel: threading.Event | None = None
    ) -> Iterator[Event]:
        """Plain-text continuation of ``text`` (no chat template)."""

    def chat_batch(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        n: int,
        seeds: Sequence[int] | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        """N answers to one conversation in one batch; events carry ``seq``."""
