"""The answer inspector's keys: :data:`INSPECTOR_BINDINGS` and the :class:`InspectorKeys` they run.

:class:`InspectorKeys` is mixed into :class:`~chatcli.tui.widgets.answer.AnswerView`, whose
``BINDINGS`` is :data:`INSPECTOR_BINDINGS` (Textual reads bindings from widget classes
only, so the list lives here and the view names it). It moves the token cursor (which posts
:class:`~chatcli.tui.messages.TokenSelected`, so the panel shows that step), jumps to
uncertain tokens, and asks the app, by message, for a branch, a sibling version or the
panel's alternatives. It works on the view's ``node``, ``cursor``, token chunks and
``showing_tokens``.

The printable keys act only while the person has entered the inspector on purpose
(:meth:`InspectorKeys.enter_inspector`); otherwise, and from the first key the inspector
does not bind, typed text goes to the prompt together with the keys queued behind it.
"""

from __future__ import annotations

import bisect

from textual import events
from textual.binding import Binding

from chatcli.tui.messages import BranchRequested, PickAlternative, SiblingRequested, StatusHint, TokenSelected
from chatcli.tui.token_text import UNCERTAIN
from chatcli.tui.widgets.token_chunk import TokenChunk

INSPECTOR_BINDINGS = [
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


class InspectorKeys:
    """The token cursor and the inspector's key actions of an answer view."""

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
