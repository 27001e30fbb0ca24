"""Markdown for answers: a few Static widgets, one per segment, each rendering Rich Markdown.

Why not Textual's Markdown widget: it mounts a widget per block (and per list
item, table cell...), and Textual re-arranges every widget of the screen
whenever an answer grows; a long conversation then costs hundreds of
milliseconds per update. Here an answer is split at blank lines (outside code
fences) into segments of at least ``min_chars``; while it streams only the last
segment re-renders, and a finished answer is a handful of widgets whatever its length.

A Qwen3-style answer's reasoning (its ``<think>`` block, :func:`chatcli.tokenizer.thinking.thinking_end`)
is not Markdown the model meant for the reader: it shows above the answer as faint, italic plain
text (:class:`ThinkingBlock`), and only what follows it is rendered as Markdown.
"""

from __future__ import annotations

from typing import ClassVar

from rich.console import Console, ConsoleOptions
from rich.markdown import Heading, Markdown as RichMarkdown
from rich.segment import Segment
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Static

from chatcli.tokenizer.thinking import CLOSE, OPEN, thinking_end


class _LeftHeading(Heading):
    LEVEL_ALIGN: ClassVar[dict] = {f"h{i}": "left" for i in range(1, 7)}


class AnswerMarkdown(RichMarkdown):
    """Rich Markdown for chat answers: headings left-aligned, and single newlines kept.

    Models write poems, addresses and step lists with single newlines; Markdown
    would join those lines into one paragraph, so soft breaks become hard breaks
    (as most chat front ends do).
    """

    elements: ClassVar[dict] = {**RichMarkdown.elements, "heading_open": _LeftHeading}

    def __init__(self, markup: str, **kwargs) -> None:
        super().__init__(markup, **kwargs)
        for token in self.parsed:
            for child in token.children or ():
                if child.type == "softbreak":
                    child.type = "hardbreak"


def segment_bounds(text: str, min_chars: int = 1200) -> list[int]:
    """Offsets where segments start: after a blank line outside code fences, once a segment has ``min_chars``.

    Stable while text is appended: a boundary only follows complete lines and
    needs the next character known (not indentation, which would turn a list's
    continuation into a code block), so earlier boundaries never move.
    """
    bounds = [0]
    fence: str | None = None
    pos = 0
    n = len(text)
    for line in text.splitlines(keepends=True):
        end = pos + len(line)
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            if fence is None:
                fence = stripped[:3]
            elif stripped.startswith(fence) and line.endswith("\n"):
                fence = None
        elif (
            not stripped and fence is None and line.endswith("\n") and end < n
            and text[end] not in " \t\n" and end - bounds[-1] >= min_chars
        ):
            bounds.append(end)
        pos = end
    return bounds


class TrimmedMarkdown:
    """Answer Markdown without the blank lines Rich puts around a leading or trailing list."""

    def __init__(self, text: str) -> None:
        self.markdown = AnswerMarkdown(text)

    def __rich_console__(self, console: Console, options: ConsoleOptions):
        # Render at full height, trim, then crop: Textual passes the measured (trimmed) height, and
        # cropping before trimming would cut the last line of an answer that starts with a list.
        lines = console.render_lines(self.markdown, options.update(height=None), pad=False)
        blank = [all(not seg.text.strip() and not (seg.style and seg.style.bgcolor) for seg in line) for line in lines]
        start = next((i for i, b in enumerate(blank) if not b), len(lines))
        end = len(lines) - next((i for i, b in enumerate(reversed(blank)) if not b), len(lines))
        if options.height is not None:
            end = min(end, start + options.height)
        new_line = Segment.line()
        for line in lines[start:end]:
            yield from line
            yield new_line


class MarkdownSegment(Static):
    def __init__(self, text: str) -> None:
        super().__init__(TrimmedMarkdown(text), classes="md-seg")
        self.text = text

    def set_text(self, text: str) -> None:
        if text != self.text:
            self.text = text
            self.update(TrimmedMarkdown(text))


class ThinkingBlock(Static):
    """The reasoning of an answer, faint; hidden while there is none."""

    DEFAULT_CSS = "ThinkingBlock { margin-bottom: 1; }"

    def __init__(self) -> None:
        super().__init__("", classes="md-thinking")
        self.text = ""
        self.display = False

    def set_text(self, reasoning: str) -> None:
        if reasoning == self.text:
            return
        self.text = reasoning
        shown = reasoning.strip().removeprefix(OPEN).removesuffix(CLOSE).strip("\n")
        self.display = bool(reasoning)
        self.update(Content.assemble(("thinking  ", "bold $text-muted"), (shown, "italic $text-muted")))


class MarkdownBody(Vertical):
    """The answer text as Markdown, updated incrementally by :meth:`set_text`."""

    def __init__(self, text: str = "", *, classes: str = "", min_chars: int = 1200) -> None:
        super().__init__(classes=classes)
        self.min_chars = min_chars
        self.source = ""
        self._initial = text

    def compose(self):
        yield ThinkingBlock()

    def on_mount(self) -> None:
        if self._initial:
            self.set_text(self._initial)

    def set_text(self, text: str) -> None:
        """Show ``text`` (its reasoning, if any, faint above); only segments whose text changed re-render."""
        self.source = text
        end = thinking_end(text)
        self.query_one(ThinkingBlock).set_text(text[:end])
        text = text[end:]
        bounds = segment_bounds(text, self.min_chars)
        pieces = [text[a:b].strip("\n") for a, b in zip(bounds, [*bounds[1:], len(text)])]
        segments = list(self.query_children(MarkdownSegment))
        for seg, piece in zip(segments, pieces):
            seg.set_text(piece)
        if len(pieces) > len(segments):
            self.mount_all([MarkdownSegment(p) for p in pieces[len(segments):]])
        for seg in segments[len(pieces):]:
            seg.remove()
