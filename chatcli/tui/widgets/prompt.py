"""The prompt: a multi-line input with history, and the slash-command hints above it.

Enter sends; Ctrl+J, Alt+Enter and Shift+Enter (where the terminal reports it)
insert a newline; a paste inserts its text (newlines included) without sending.
Up on the first line and Down on the last line walk the input history. While
the text is a partial command (``/se``), :class:`CommandHints` lists the
matching commands from the registry and Tab completes.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.content import Content
from textual.message import Message
from textual.widgets import Static, TextArea

from chatcli.chat.commands import Command, Registry

NEWLINE_KEYS = ("ctrl+j", "alt+enter", "shift+enter", "ctrl+enter", "alt+j")


class ChatInput(TextArea):
    @dataclass
    class Submitted(Message):
        text: str

    def __init__(self, registry: Registry, history: list[str] | None = None, placeholder: str = "") -> None:
        super().__init__(
            id="prompt", soft_wrap=True, compact=True, show_line_numbers=False, tab_behavior="focus",
            highlight_cursor_line=False, placeholder=placeholder,
        )
        self.registry = registry
        self.input_history: list[str] = list(history or [])
        self._hist_pos: int | None = None  # index into history while browsing
        self._draft = ""

    async def _on_key(self, event: events.Key) -> None:
        key = event.key
        if key == "enter":
            self._stop(event)
            self.submit()
            return
        if key in NEWLINE_KEYS:
            self._stop(event)
            self.insert("\n")
            return
        if key == "tab" and self.completions():
            self._stop(event)
            self.complete()
            return
        if key == "up" and self.cursor_location[0] == 0 and self.input_history:
            self._stop(event)
            self.recall(-1)
            return
        if key == "down" and self._hist_pos is not None and self.cursor_location[0] == self.document.line_count - 1:
            self._stop(event)
            self.recall(1)
            return
        await super()._on_key(event)

    @staticmethod
    def _stop(event: events.Key) -> None:
        event.stop()
        event.prevent_default()

    def submit(self) -> None:
        text = self.text
        if not text.strip():
            return
        if not self.input_history or self.input_history[-1] != text:
            self.input_history.append(text)
        self._hist_pos = None
        self.clear()
        self.post_message(self.Submitted(text))

    def recall(self, direction: int) -> None:
        """Step through the history (-1 older, +1 newer); past the newest, the draft comes back."""
        if self._hist_pos is None:
            if direction > 0:
                return
            self._draft = self.text
            self._hist_pos = len(self.input_history)
        pos = self._hist_pos + direction
        if pos < 0:
            self.app.bell()
            return
        if pos >= len(self.input_history):
            self._hist_pos = None
            self.load_text(self._draft)
        else:
            self._hist_pos = pos
            self.load_text(self.input_history[pos])
        self.move_cursor(self.document.end)

    # --- completion ------------------------------------------------------------------------

    def completions(self) -> list[Command]:
        text = self.text
        if not text.startswith("/") or text.startswith("//") or any(c.isspace() for c in text):
            return []
        return self.registry.complete(text[1:])

    def complete(self) -> None:
        matches = self.completions()
        if not matches:
            return
        names = [m.name for m in matches]
        common = names[0]
        for n in names[1:]:
            while not n.startswith(common):
                common = common[:-1]
        if len(matches) == 1:
            new = f"/{matches[0].name}" + (" " if matches[0].args else "")
        elif len(common) > len(self.text) - 1:
            new = f"/{common}"
        else:
            return
        self.load_text(new)
        self.move_cursor(self.document.end)


class CommandHints(Static):
    """Matching commands while a command is being typed."""

    MAX = 7

    def __init__(self) -> None:
        super().__init__("", id="hints")

    def show_for(self, matches: list[Command]) -> None:
        if not matches:
            self.display = False
            return
        lines = []
        width = max(len(m.usage) for m in matches[: self.MAX])
        for m in matches[: self.MAX]:
            lines.append(Content.assemble((m.usage.ljust(width), "bold $accent"), "  ", (m.summary, "$text-muted")))
        more = len(matches) - self.MAX
        if more > 0:
            lines.append(Content.styled(f"… {more} more", "$text-muted"))
        lines.append(Content.styled("Tab completes · Enter runs", "$text-muted italic"))
        self.update(Content("\n").join(lines))
        self.display = True
