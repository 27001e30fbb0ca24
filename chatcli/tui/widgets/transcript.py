"""The transcript: the active path of the conversation, plus notes (command output, warnings).

It mounts one widget per message and never re-renders the whole transcript for a
token: streaming goes to the last :class:`AnswerView` only. It stays anchored to
the bottom while the reader is there and lets go when they scroll up.

It owns the view state its answers share: the tint every answer shows
(:meth:`Transcript.set_tint`), which answer is being inspected (the last one to
get the focus, until :meth:`Transcript.clear_inspected`) and which one a
``/compare`` tints by KL (:attr:`Transcript.compared`, read from the answers), and
what the panel's attention view tints (:meth:`Transcript.set_attention`).
"""

from __future__ import annotations

from rich.console import RenderableType
from rich.style import Style as RichStyle
from rich.text import Text
from textual.containers import Vertical, VerticalScroll
from textual.widget import Widget
from textual.content import Content
from textual.widgets import Label, ProgressBar, Static

from chatcli.chat.session import Conversation, Node
from chatcli.tui.attention_tint import AttentionMap, locate, shaded
from chatcli.tui.widgets.answer import AnswerView


class UserMessage(Static):
    def __init__(self, node: Node) -> None:
        super().__init__(Content(node.content), classes="user")
        self.node = node
        self.border_title = "You"

    def set_shades(self, shades: list[tuple[int, int, float]] | None) -> None:
        """Tint characters by attention weight ((start, end, weight) in the message); None: plain."""
        self.update(shaded(Content(self.node.content), shades))


class Note(Static):
    """Command output or a notice; not part of the conversation."""

    def __init__(self, message: RenderableType | str, kind: str = "info") -> None:
        self.kind = kind
        self.message = message
        super().__init__(Content(message) if isinstance(message, str) else message, classes=f"note -{kind}")
        self._shaded = False

    @property
    def prompt_of(self) -> tuple[int, int, int, str] | None:
        """(answer id, start, end, text): the part of this note that shows the prompt of an answer
        (``/raw`` marks it with ``{"prompt_of": id}`` style meta), or None."""
        if not isinstance(self.message, Text):
            return None
        for span in self.message.spans:
            meta = span.style.meta if isinstance(span.style, RichStyle) else {}
            if "prompt_of" in meta:
                return meta["prompt_of"], span.start, span.end, self.message.plain[span.start : span.end]
        return None

    def set_shades(self, shades: list[tuple[int, int, float]] | None) -> None:
        """Tint the marked prompt by attention weight ((start, end, weight) within it); None: as said."""
        marked = self.prompt_of
        if marked is None or (not shades and not self._shaded):
            return
        self._shaded = bool(shades)
        self.update(shaded(Content.from_rich_text(self.message), shades, offset=marked[1]) if shades else self.message)

    @property
    def plain(self) -> str:
        """The note as plain text (tests, copying)."""
        if isinstance(self.message, str):
            return self.message
        import io

        from rich.console import Console

        buf = io.StringIO()
        Console(file=buf, width=200, color_system=None).print(self.message)
        return buf.getvalue()


class LoadingBanner(Vertical):
    def __init__(self, name: str) -> None:
        super().__init__(id="loading")
        self.model_name = name

    def compose(self):
        yield Label(Content.assemble(("Loading ", "$text-muted"), (self.model_name, "bold"), ("…", "$text-muted")), id="loading-label")
        yield ProgressBar(total=None, show_eta=False, id="loading-bar")

    def progress(self, stage: str, done: int, total: int | None) -> None:
        self.query_one("#loading-label", Label).update(
            Content.assemble(("Loading ", "$text-muted"), (self.model_name, "bold"), (f" — {stage}", "$text-muted"))
        )
        bar = self.query_one("#loading-bar", ProgressBar)
        bar.update(total=total, progress=done)


TINT_HELP = {
    "off": "answers as Markdown",
    "model_prob": "tokens tinted by how unlikely the model found them",
    "entropy": "tokens tinted by how open the choice was (entropy)",
}

WELCOME_KEYS = [
    ("Enter", "send"),
    ("Ctrl+J", "new line"),
    ("/", "commands (/help)"),
    ("Esc", "stop the answer"),
    ("Ctrl+↑", "inspect tokens"),
    ("F2", "tint by certainty"),
]


def welcome_content(model: str | None) -> Content:
    head = Content.assemble(
        ("chatcli", "bold $accent"), (" — chat with ", "$text-muted"), (model or "a local model", "bold"),
        (", one token at a time.\n", "$text-muted"),
    )
    body = Content.styled(
        "Every token is drawn from a probability distribution; the panel on the right shows it. "
        "Select a token to see how sure the model was, pick an alternative to branch the answer there.\n\n",
        "$text-muted",
    )
    keys = Content.assemble(*[p for k, v in WELCOME_KEYS for p in ((k, "bold $accent"), (f" {v}    ", "$text-muted"))])
    return head + body + keys


class Transcript(VerticalScroll, can_focus=False):
    def __init__(self, *, tint: str = "off", id: str | None = None) -> None:
        super().__init__(id=id)
        self.tint = tint  # "off" (Markdown) | "model_prob" | "entropy": what every answer shows
        self.inspected: AnswerView | None = None  # the answer whose tokens are being looked at
        self.attention: AttentionMap | None = None  # the panel's attention view shows: what it tints

    def on_mount(self) -> None:
        self.anchor()

    # --- view state ------------------------------------------------------------------------

    def set_tint(self, tint: str) -> None:
        self.tint = tint
        for view in self.answers():
            view.set_tint(tint)

    def set_attention(self, amap: AttentionMap | None) -> None:
        """Tint what a selected step attended to (:mod:`chatcli.tui.attention_tint`); None: normal tints."""
        if amap is None and self.attention is None:
            return
        self.attention = amap
        self._tint_attention()

    def _tint_attention(self) -> None:
        """The selected answer's tokens before the step, the messages above it found in its prompt
        text (user messages by character, earlier answers by token), and the /raw notes of that prompt."""
        amap = self.attention
        children = list(self.children)
        target = next((w for w in children if isinstance(w, AnswerView) and amap is not None and w.node.id == amap.node_id), None)
        above = [w for w in children[: children.index(target)] if isinstance(w, (UserMessage, AnswerView))] if target else []
        offsets = locate(amap.prompt, [w.node.content for w in above]) if amap is not None and amap.prompt else []
        found = {id(w): at for w, at in zip(above, offsets)}
        for w in children:
            at = found.get(id(w))
            if isinstance(w, AnswerView):
                values = None
                if w is target:
                    values = amap.answer_values()
                elif at is not None:
                    values = amap.step_values(at, [s.text for s in w.node.steps])
                w.set_attention(values)
            elif isinstance(w, UserMessage):
                w.set_shades(amap.text_shades(at, len(w.node.content)) if at is not None else None)
            elif isinstance(w, Note):
                marked = w.prompt_of
                fits = amap is not None and marked is not None and marked[0] == amap.node_id and marked[3] == amap.prompt
                w.set_shades(amap.prompt_shades() if fits else None)

    @property
    def compared(self) -> AnswerView | None:
        """The answer a /compare tints by KL (at most one; a sibling switch or a redraw drops it)."""
        return next((a for a in self.answers() if a.comparison is not None), None)

    def on_descendant_focus(self, event) -> None:
        if isinstance(event.widget, AnswerView):
            self.set_inspected(event.widget)

    def set_inspected(self, view: AnswerView) -> None:
        """``view`` is inspected now; the one inspected before goes back to the tint."""
        if self.inspected is not None and self.inspected is not view and self.inspected.is_attached:
            self.inspected.set_inspecting(False)
        self.inspected = view

    def clear_inspected(self) -> None:
        if self.inspected is not None and self.inspected.is_attached:
            self.inspected.set_inspecting(False)
        self.inspected = None

    def focus_inspected(self) -> bool:
        """Give the focus back to the inspected answer; False when there is none."""
        if self.inspected is None or not self.inspected.is_attached:
            return False
        self.inspected.enter_inspector()
        return True

    # --- moving between answers (Ctrl+↑, and ↑/↓ on an answer) -----------------------------

    def inspect_next(self, focused: Widget | None) -> bool:
        """Enter the inspector on the answer a /compare tints, else the last one, or from an answer
        the one above ``focused``, with its token cursor; False: no answer yet."""
        answers = self.answers()
        if not answers:
            return False
        target = self.compared or answers[-1]
        if isinstance(focused, AnswerView) and focused in answers:
            target = answers[max(0, answers.index(focused) - 1)]
        target.enter_inspector()
        if target.node.steps:
            target.move_to(target.cursor if target.cursor is not None else len(target.node.steps) - 1)
        return True

    def focus_neighbour(self, view: AnswerView, delta: int) -> bool:
        """Focus the answer ``delta`` away from ``view``; True when that is past the last one."""
        answers = self.answers()
        if view not in answers:
            return False
        idx = answers.index(view) + delta
        if idx >= len(answers):
            return True
        if idx >= 0:
            answers[idx].enter_inspector()
            answers[idx].scroll_visible(animate=False)
        return False

    # --- queries ---------------------------------------------------------------------------

    def answers(self) -> list[AnswerView]:
        return list(self.query(AnswerView))

    def view_for(self, node_id: int) -> AnswerView | None:
        return next((a for a in self.query(AnswerView) if a.node.id == node_id), None)

    # --- building --------------------------------------------------------------------------

    async def show_conversation(self, conv: Conversation, *, model: str, welcome: Content | None = None) -> None:
        """Replace everything with the conversation's active path."""
        await self.remove_children()
        self.inspected = None
        self.attention = None
        widgets = [Static(welcome, id="welcome")] if welcome is not None and conv.is_empty() else []
        widgets += [self._widget_for(conv, node, model) for node in conv.path()]
        if widgets:
            await self.mount_all(widgets)
        self.anchor()

    async def rerender_from(self, conv: Conversation, view: AnswerView, node: Node, *, model: str) -> None:
        """Show ``node`` in ``view`` (a sibling switch) and the path below it anew."""
        children = list(self.children)
        idx = children.index(view)
        for w in children[idx + 1:]:
            await w.remove()
        view.reset(node, _sibling_pos(conv, node))
        path = conv.path()
        below = path[[n.id for n in path].index(node.id) + 1:]
        if below:
            await self.mount_all([self._widget_for(conv, n, model) for n in below])

    def _widget_for(self, conv: Conversation, node: Node, model: str):
        if node.role == "user":
            return UserMessage(node)
        return AnswerView(node, sibling_pos=_sibling_pos(conv, node), model=node.meta.get("model") or model, tint=self.tint)

    async def show_answer(self, conv: Conversation, node: Node, *, model: str) -> AnswerView:
        """The view an answer about to stream goes into: its own, the one on screen that a retry
        or a branch replaces (with the path below it redrawn), or a new one at the end."""
        view = self.view_for(node.id)
        if view is None:
            shown = next((a for a in self.answers() if a.node.parent == node.parent), None)
            if shown is not None:
                await self.rerender_from(conv, shown, node, model=model)
                view = shown
            else:
                parent = conv.nodes.get(node.parent) if node.parent is not None else None
                if parent is not None and not any(isinstance(w, UserMessage) and w.node.id == parent.id for w in self.children):
                    await self.add_user(parent)
                view = await self.add_answer(conv, node, model=model)
        else:
            view.reset(node, view.sibling_pos)
        view.update_header()
        return view

    async def add_user(self, node: Node) -> None:
        await self._drop_welcome()
        await self.mount(UserMessage(node))

    async def add_answer(self, conv: Conversation, node: Node, *, model: str) -> AnswerView:
        await self._drop_welcome()
        view = AnswerView(node, sibling_pos=_sibling_pos(conv, node), model=model, tint=self.tint)
        await self.mount(view)
        self.anchor()
        return view

    def add_note(self, message: RenderableType | str, kind: str = "info") -> Note:
        note = Note(message, kind)
        self.mount(note)
        if self.attention is not None and note.prompt_of is not None:  # /raw while the attention view shows
            self._tint_attention()
        self.call_after_refresh(self.scroll_end, animate=False)  # a command's answer should be in view
        return note

    async def _drop_welcome(self) -> None:
        for w in self.query("#welcome"):
            await w.remove()


def _sibling_pos(conv: Conversation, node: Node) -> tuple[int, int]:
    sibs, i = conv.siblings(node.id)
    return i, len(sibs)
