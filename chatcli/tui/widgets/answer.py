"""One assistant answer in the transcript: Markdown for reading, tinted tokens for inspecting.

The view owns no conversation data: it renders ``node`` (a :class:`chatcli.chat.session.Node`
that the generation worker appends steps to) and is told to catch up with
:meth:`AnswerView.sync` at most every flush interval. It owns how it shows it: the
token cursor, whether it is being inspected, the tint, and a ``/compare``'s KL tint;
what the rest of the app should do it posts as messages (:mod:`chatcli.tui.messages`). Streaming cost stays flat:
the Markdown is split into segments at blank lines and the token view into
chunks at newlines, so only the last segment or chunk re-renders.

Keys in the inspector: ←/→ move the token cursor, [ / ] jump to the previous/next
uncertain token, Home/End, PgUp/PgDn, 1-9 branch with that alternative, Enter
picks an alternative in the panel, , / . switch between sibling answers,
↑/↓ go to the previous/next answer, d / w / l / a show the panel's distribution,
what-if, lens or attention view of the token, Esc returns to the prompt.

The printable ones among those keys (h, g, [, ], 1-9, , and ., d w l a) act only while the
person has entered the inspector on purpose (:meth:`AnswerView.enter_inspector`: Ctrl+↑,
a click on a token, ↑/↓ from another answer, back from the alternatives). An answer
that got the focus any other way (a click beside the tokens, Tab, a switch of versions
from its header) passes typed text to the prompt, and so does the inspector itself from
the first key it does not bind: the keys typed right after it follow, so typed text
never lands half in the prompt and half in the inspector.

The tokens are drawn by :class:`~chatcli.tui.widgets.token_chunk.TokenChunk` (one per
chunk), the header line and the footer note by :mod:`chatcli.tui.widgets.answer_header`;
the inspector's keys and cursor are :mod:`chatcli.tui.widgets.answer_keys`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Static

from chatcli.engine.events import Done
from chatcli.chat.session import Node
from chatcli.tui.widgets.answer_header import footer_text, header_content
from chatcli.tui.widgets.answer_keys import INSPECTOR_BINDINGS, InspectorKeys
from chatcli.tui.widgets.markdown_body import MarkdownBody
from chatcli.tui.widgets.token_chunk import TokenChunk
from chatcli.tui.token_text import chunk_bounds

if TYPE_CHECKING:  # the comparison module pulls in torch; the view only reads its dataclasses
    from chatcli.lora.compare import Comparison


class AnswerHeader(Static):
    """The answer's title line; its ‹ › arrows switch between sibling answers."""

    def action_sibling(self, delta: int) -> None:
        if isinstance(self.parent, AnswerView):
            self.parent.action_sibling(delta)


class AnswerView(InspectorKeys, Vertical, can_focus=True):
    BINDINGS = INSPECTOR_BINDINGS  # and their actions: widgets/answer_keys.py

    def __init__(self, node: Node, *, sibling_pos: tuple[int, int] = (0, 1), model: str = "", tint: str = "off") -> None:
        super().__init__(classes="answer")
        self.node = node
        self.sibling_pos = sibling_pos  # (position, count)
        self.model = model
        self.tint = tint  # the app's tint: "off" shows Markdown unless inspecting
        self.inspecting = False
        self.inspector_keys = False  # entered on purpose (enter_inspector): its printable keys act here
        self._passing_on = False  # typed keys go to the prompt and its focus is on its way
        self.comparison: Comparison | None = None  # set by /compare: tint by KL(adapter || base)
        self.kl_bits: list[float] | None = None
        self.attention: list[float] | None = None  # set while the panel's attention view shows: tint by weight
        self.cursor: int | None = None
        self._md_fed = 0  # characters of node.content the Markdown shows
        self._chunks: list[TokenChunk] = []
        self._tokens_dirty = True
        self._md_dirty = False

    # --- composition -----------------------------------------------------------------------

    def compose(self):
        yield AnswerHeader(self._header(), classes="answer-header")
        self._md_fed = len(self.node.content)
        yield MarkdownBody(self.node.content, classes="answer-md")
        yield Vertical(classes="answer-tokens")
        yield Static("", classes="answer-footer")

    def on_mount(self) -> None:
        self._apply_mode()
        self._update_footer()

    @property
    def showing_tokens(self) -> bool:
        return self.tint != "off" or self.inspecting or self.comparison is not None or self.attention is not None

    @property
    def token_tint(self) -> str:
        if self.attention is not None:  # the attention view is open: it wins while it shows
            return "attention"
        if self.comparison is not None:
            return "kl"
        return self.tint if self.tint != "off" else "model_prob"

    @property
    def shade_values(self) -> list[float] | None:
        """The per-token values the "attention" or "kl" tint reads (see :func:`token_content`)."""
        return self.attention if self.attention is not None else self.kl_bits

    def set_attention(self, weights: list[float] | None) -> None:
        """Tint this answer's tokens by the attention weights a selected step gave them (indexed by
        answer position; later tokens untinted); None: back to the tint it had."""
        if weights == self.attention:
            return
        self.attention = weights
        self._apply_mode()
        self.update_header()

    def set_comparison(self, comparison: Comparison | None) -> None:
        """Tint this answer by the per-token KL of ``comparison`` (None: back to the app's tint)."""
        if comparison is not None and len(comparison.steps) != len(self.node.steps):
            raise ValueError(f"comparison of {len(comparison.steps)} steps for an answer of {len(self.node.steps)}")
        self.comparison = comparison
        self.kl_bits = [s.kl_bits for s in comparison.steps] if comparison is not None else None
        self.set_class(comparison is not None, "-compared")
        self._apply_mode()
        self.update_header()

    @property
    def streaming(self) -> bool:
        return self.node.status == "streaming"

    def set_tint(self, tint: str) -> None:
        self.tint = tint
        self._apply_mode()

    def set_inspecting(self, on: bool) -> None:
        if on != self.inspecting:
            self.inspecting = on
            self._apply_mode()

    def _apply_mode(self) -> None:
        tokens = self.showing_tokens
        self.set_class(tokens, "-tokens")
        if tokens:
            self._sync_tokens(force=self._tokens_dirty)
            for chunk in self._chunks:
                chunk.refresh()
        elif self._md_dirty:
            self.rebuild_markdown()

    # --- streaming -------------------------------------------------------------------------

    async def sync(self) -> None:
        """Catch up with the steps the worker added since the last call."""
        if self.showing_tokens:
            self._sync_tokens()
            self._md_dirty = self._md_dirty or len(self.node.content) != self._md_fed
        else:
            self._tokens_dirty = True
            self.rebuild_markdown()
        self.update_header()

    async def finish(self, done: Done) -> None:
        await self.sync()
        if self._md_dirty or self._md_fed != len(self.node.content):
            self.rebuild_markdown()
        self._sync_tokens(force=True)
        self.update_header()
        self._update_footer()

    def rebuild_markdown(self) -> None:
        self._md_fed = len(self.node.content)
        self._md_dirty = False
        self.query_one(".answer-md", MarkdownBody).set_text(self.node.content)

    def reset(self, node: Node, sibling_pos: tuple[int, int]) -> None:
        """Show another node (a sibling) in this view."""
        self.node = node
        self.sibling_pos = sibling_pos
        self.cursor = None
        self.comparison = self.kl_bits = self.attention = None  # they described the node shown before
        self.set_class(False, "-compared")
        for chunk in self._chunks:
            chunk.remove()
        self._chunks = []
        self._tokens_dirty = True
        self.rebuild_markdown()
        self._apply_mode()
        self.update_header()
        self._update_footer()

    def _sync_tokens(self, force: bool = False) -> None:
        steps = self.node.steps
        container = self.query_one(".answer-tokens", Vertical)
        if force and self._chunks:
            for chunk in self._chunks:
                chunk.remove()
            self._chunks = []
        bounds = chunk_bounds(steps)
        new: list[TokenChunk] = []
        for b in bounds[len(self._chunks):]:
            chunk = TokenChunk(self, b)
            self._chunks.append(chunk)
            new.append(chunk)
        for k, chunk in enumerate(self._chunks):
            end = bounds[k + 1] if k + 1 < len(bounds) else len(steps)
            last = k == len(self._chunks) - 1
            if chunk.end != end or chunk.last != last or force:
                chunk.end, chunk.last = end, last
                chunk.refresh(layout=True)
        if new:
            container.mount_all(new)
        self._tokens_dirty = False

    # --- header / footer -------------------------------------------------------------------

    def _header(self) -> Content:
        return header_content(self.node, model=self.model, sibling_pos=self.sibling_pos, streaming=self.streaming,
                              comparison=self.comparison, attention=self.attention)  # fmt: skip

    def update_header(self) -> None:
        self.query_one(".answer-header", AnswerHeader).update(self._header())

    def _update_footer(self) -> None:
        footer = self.query_one(".answer-footer", Static)
        text = footer_text(self.node)
        footer.update(text)
        footer.set_class(self.node.status == "error", "-error")
        footer.display = bool(text)
