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
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from textual import events
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.style import Style
from textual.widgets import Static

from chatcli.engine.events import Done
from chatcli.chat.session import Node, status_label
from chatcli.tui.widgets.markdown_body import MarkdownBody
from chatcli.tui.messages import BranchRequested, PickAlternative, SiblingRequested, StatusHint, TokenSelected
from chatcli.tokenizer.thinking import thinking_steps
from chatcli.tui.token_text import UNCERTAIN, chunk_bounds, token_content

if TYPE_CHECKING:  # the comparison module pulls in torch; the view only reads its dataclasses
    from chatcli.lora.compare import Comparison


class TokenChunk(Static):
    """Steps ``start..end`` of an answer as tinted, clickable tokens."""

    def __init__(self, answer: "AnswerView", start: int) -> None:
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


class AnswerHeader(Static):
    """The answer's title line; its ‹ › arrows switch between sibling answers."""

    def action_sibling(self, delta: int) -> None:
        if isinstance(self.parent, AnswerView):
            self.parent.action_sibling(delta)


class AnswerView(Vertical, can_focus=True):
    BINDINGS = [
        Binding("left,h", "move(-1)", "Prev token", show=False),
        Binding("right", "move(1)", "Next token", show=False),
        Binding("pageup", "move(-16)", show=False),
        Binding("pagedown", "move(16)", show=False),
        Binding("home,g", "move_to_edge(0)", show=False),
        Binding("end,G", "move_to_edge(1)", show=False),
        Binding("left_square_bracket", "uncertain(-1)", "Prev uncertain", show=False),
        Binding("right_square_bracket", "uncertain(1)", "Next uncertain", show=False),
        Binding("comma,less_than_sign", "sibling(-1)", "Prev version", show=False),
        Binding("full_stop,greater_than_sign", "sibling(1)", "Next version", show=False),
        Binding("enter", "pick", "Pick alternative", show=False),
        Binding("up,k", "app.focus_answer(-1)", show=False),
        Binding("down,j", "app.focus_answer(1)", show=False),
        Binding("escape", "app.focus_input", "Back to prompt", show=False),
        *[Binding(str(k), f"branch({k})", show=False) for k in range(1, 10)],
        # the panel's views of the selected token (l: lens, so → alone moves right)
        *[Binding(k, f"app.panel_view('{v}')", show=False)
          for k, v in (("d", "distribution"), ("w", "what-if"), ("l", "lens"), ("a", "attention"))],
    ]

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
        n = self.node
        parts: list[Content | str] = [Content.styled("◆ ", "$accent"), Content.styled(self.model or "assistant", "bold")]
        pos, count = self.sibling_pos
        if count > 1:
            parts += [
                "  ",
                ("‹", Style.from_meta({"@mouse.down": "sibling(-1)"})),
                Content.styled(f" {pos + 1}/{count} ", "bold $secondary"),
                ("›", Style.from_meta({"@mouse.down": "sibling(1)"})),
            ]
        stats = []
        if n.steps:
            stats.append(f"{len(n.steps)} tokens")
        tps = n.meta.get("tokens_per_s")
        if tps and not self.streaming:
            stats.append(f"{tps:.1f} tok/s")
        if n.meta.get("forced_at") is not None:
            stats.append(f"branched at token {n.meta['forced_at'] + 1}")
        if stats:
            parts.append(Content.styled("  ·  " + "  ·  ".join(stats), "$text-muted"))
        if self.comparison is not None:
            parts.append(Content.styled(f"  ·  KL tint: with vs without {', '.join(self.comparison.adapters)}", "bold $secondary"))
        if self.attention is not None:
            parts.append(Content.styled("  ·  tint: attention of the selected token", "bold $secondary"))
        if self.streaming:
            parts.append(Content.styled("  ● writing…", "$success"))
        return Content.assemble(*parts)

    def update_header(self) -> None:
        self.query_one(".answer-header", AnswerHeader).update(self._header())

    def _update_footer(self) -> None:
        footer = self.query_one(".answer-footer", Static)
        status = self.node.status
        text = ""
        if status == "cancelled":
            text = "⏹ stopped — /continue resumes it, /retry starts over"
        elif status == "length":
            text = "✂ cut at max_tokens — /continue goes on"
        elif status == "error":
            text = f"✖ {self.node.meta.get('error', 'generation failed')}"
        footer.update(text)
        footer.set_class(status == "error", "-error")
        footer.display = bool(text)

    # --- navigation ------------------------------------------------------------------------

    def enter_inspector(self) -> None:
        """The person chose to inspect this answer (Ctrl+↑, a click on a token...): focus it, keys act."""
        self.inspector_keys = True
        self.focus()

    def on_key(self, event: events.Key) -> None:
        # Typed text goes to the prompt, unless it is a key of the inspector entered on purpose.
        if not (event.is_printable and event.character):
            return
        if self.inspector_keys and event.key in self._bindings.key_to_bindings:
            return
        event.stop()
        event.prevent_default()
        # The focus moves after this key; keys already queued behind it reach this answer
        # first and must follow it into the prompt, not move the cursor or branch.
        self.inspector_keys = False
        prompt = self.app.prompt  # type: ignore[attr-defined]
        if not self._passing_on:  # one focus request for a burst of keys
            self._passing_on = True
            prompt.focus()
        prompt.insert(event.character)

    def on_blur(self) -> None:
        self.inspector_keys = self._passing_on = False

    def on_focus(self) -> None:
        self._passing_on = False
        # The transcript marks this answer inspected (it sees the focus as DescendantFocus).
        if self.cursor is None and self.node.steps:
            self.move_to(len(self.node.steps) - 1, scroll=False)

    def move_to(self, index: int, *, scroll: bool = True) -> None:
        if not self.node.steps:
            return
        index = max(0, min(len(self.node.steps) - 1, index))
        old = self.cursor
        self.cursor = index
        if not self.showing_tokens:
            self.set_inspecting(True)
        for i in {old, index}:
            chunk = self._chunk_for(i)
            if chunk is not None:
                chunk.refresh()
        chunk = self._chunk_for(index)
        if chunk is not None and scroll:
            self.call_after_refresh(chunk.scroll_visible, animate=False)
        self.post_message(TokenSelected(self.node.id, index))

    def _chunk_for(self, index: int | None) -> TokenChunk | None:
        if index is None or not self._chunks:
            return None
        starts = [c.start for c in self._chunks]
        return self._chunks[max(0, bisect.bisect_right(starts, index) - 1)]

    def action_move(self, delta: int) -> None:
        self.move_to((self.cursor if self.cursor is not None else len(self.node.steps)) + delta)

    def action_move_to_edge(self, end: int) -> None:
        self.move_to(len(self.node.steps) - 1 if end else 0)

    def action_uncertain(self, direction: int) -> None:
        steps = self.node.steps
        i = self.cursor if self.cursor is not None else (-1 if direction > 0 else len(steps))
        i += direction
        while 0 <= i < len(steps):
            if steps[i].model_prob < UNCERTAIN:
                self.move_to(i)
                return
            i += direction
        self.app.bell()
        where = "after" if direction > 0 else "before"
        self.post_message(StatusHint(f"no more uncertain tokens {where} this one" if self.cursor is not None
                                     else "no uncertain tokens in this answer"))  # fmt: skip

    def action_sibling(self, delta: int) -> None:
        self.post_message(SiblingRequested(self.node.id, delta))

    def action_branch(self, rank: int) -> None:
        if self.cursor is None:
            return
        step = self.node.steps[self.cursor]
        if rank > len(step.top):
            self.app.bell()
            return
        alt = step.top[rank - 1]
        if alt.id == step.id:
            self.notify(f"#{rank} is the token already chosen here", severity="warning", timeout=2)
            return
        self.post_message(BranchRequested(self.node.id, self.cursor, alt.id))

    def action_pick(self) -> None:
        self.post_message(PickAlternative())
