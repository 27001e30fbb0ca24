"""A run of an answer's tokens as tinted, clickable text: :class:`TokenChunk`.

An answer's token view is split into chunks at newlines (:func:`chatcli.tui.token_text.chunk_bounds`)
so that streaming re-renders only the last one. A chunk owns nothing: it draws steps
``start..end`` of the answer it belongs to (:class:`TokenSource`: the answer view), with
that answer's tint, cursor and per-token values, and a press on a token enters that
answer's inspector at it. The last chunk of an ended answer also shows the text the engine
flushed without a step (held-back bytes).
"""

from __future__ import annotations

from typing import Protocol

from textual import events
from textual.content import Content
from textual.widgets import Static

from chatcli.chat.session import Node
from chatcli.tokenizer.thinking import thinking_steps
from chatcli.tui.token_text import token_content


class TokenSource(Protocol):
    """What a chunk reads of its answer (:class:`~chatcli.tui.widgets.answer.AnswerView`)."""

    node: Node
    cursor: int | None

    @property
    def token_tint(self) -> str: ...

    @property
    def shade_values(self) -> list[float] | None: ...

    @property
    def streaming(self) -> bool: ...

    def enter_inspector(self) -> None: ...

    def move_to(self, index: int, *, scroll: bool = True) -> None: ...


class TokenChunk(Static):
    """Steps ``start..end`` of an answer as tinted, clickable tokens."""

    def __init__(self, answer: TokenSource, start: int) -> None:
        super().__init__(classes="chunk")
        self.answer = answer
        self.start = start
        self.end = start
        self.last = True

    def render(self) -> Content:
        a = self.answer
        steps = a.node.steps[self.start : self.end]
        content = token_content(
            steps, self.start, tint=a.token_tint, cursor=a.cursor, forced_at=a.node.meta.get("forced_at"),
            strip_final_newline=not self.last, values=a.shade_values,
            faint_before=thinking_steps(s.text for s in a.node.steps),
        )
        if self.last and not a.streaming:  # text the engine flushed without a step (held-back bytes)
            step_text = a.node.step_text
            tail = a.node.content[len(step_text):] if a.node.content.startswith(step_text) else ""
            if tail:
                content = content + Content(tail)
        return content

    def on_mouse_down(self, event: events.MouseDown) -> None:
        # On mouse down, not click: focusing the answer can re-layout the transcript
        # before the button comes up, and the click would land elsewhere.
        index = event.style.meta.get("token")
        if index is not None:
            event.stop()
            self.answer.enter_inspector()
            self.answer.move_to(int(index))
