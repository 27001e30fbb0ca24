"""The chat app's keys: :data:`KEY_BINDINGS` and the ``action_*`` methods they (and the answers' keys) run.

:class:`KeyActions` is mixed into :class:`chatcli.tui.app.ChatApp`, whose ``BINDINGS`` is
:data:`KEY_BINDINGS` (Textual reads bindings from widget classes only, so the list lives
here and the app names it). The actions work on the app's widgets, its ``stream`` and
``commands``, and the panel methods of :mod:`chatcli.tui.app_panel`.

Esc works one layer at a time: stop the answer, leave a panel view for its token, leave
the inspector for the prompt, close the command hints, end a ``/compare`` tint; anything
else (a modal, the prompt's own keys) gets the key through :class:`SkipAction`.
"""

from __future__ import annotations

from textual.actions import SkipAction
from textual.binding import Binding

from chatcli.tui.token_text import TINTS
from chatcli.tui.widgets.answer import AnswerView
from chatcli.tui.widgets.panel_view import PanelView
from chatcli.tui.widgets.prompt import ChatInput, CommandHints

KEY_BINDINGS = [
    Binding("escape", "escape", "Stop", priority=True, id="stop"),
    Binding("ctrl+c", "interrupt", "Stop", show=False, priority=True, id="interrupt"),
    Binding("ctrl+up,alt+up", "inspect", "Inspect", id="inspect", key_display="^↑"),
    Binding("f2", "cycle_tint", "Tint", id="tint"),
    Binding("f3", "toggle_panel", "Panel", id="panel"),
    Binding("f4", "toggle_compare", "Sampled", id="compare"),
    Binding("f5", "cycle_view", "View", id="panel_view"),
    # F8 runs what a plugin's status item offers (/finetune load); F6/F7 select text in the input.
    Binding("f8", "status_action", "Offer", show=False, id="status_action"),
    Binding("ctrl+q", "quit", "Quit", priority=True, id="quit"),
]


class KeyActions:
    """The key actions of :data:`KEY_BINDINGS`; answers bind ↑/↓, Esc and d/w/l/a to app actions too."""

    def action_escape(self) -> None:
        if self.screen is not self.screen_stack[0]:
            raise SkipAction()  # a modal (the command palette) closes itself
        # One layer per press: the answer being written, the command hints, the inspector
        # (back to the prompt at once, the /compare tint stays), then the /compare tint.
        hints = self.query_one(CommandHints)
        if self.stream.streaming and not self.stream.stopping:
            self.action_stop()
        elif isinstance(self.focused, PanelView) and self.transcript.focus_inspected():
            pass  # from a view of the panel back to the token it shows
        elif not isinstance(self.focused, ChatInput):
            self.prompt.focus()
        elif hints.display:
            hints.display = False
        elif self.end_comparison():
            self.refresh_status()
        else:
            raise SkipAction()

    def action_stop(self) -> None:
        if self.stream.cancel():
            self.refresh_status(state="stopping")

    def action_interrupt(self) -> None:
        if self.stream.streaming and not self.stream.stopping:
            self.action_stop()
            return
        raise SkipAction()  # copy in the prompt, or the "Ctrl+Q quits" hint

    def action_focus_input(self) -> None:
        self.prompt.focus()

    def action_inspect(self) -> None:
        if not self.transcript.inspect_next(self.focused):
            self.notify("no answer to inspect yet", timeout=2)

    def action_focus_answer(self, delta: int) -> None:
        if isinstance(self.focused, AnswerView) and self.transcript.focus_neighbour(self.focused, delta):
            self.prompt.focus()  # below the last answer

    def action_panel_view(self, name: str) -> None:
        self.open_panel_view(name)

    def action_cycle_view(self) -> None:
        self.open_panel_view(self.panel.next_view())

    def action_cycle_tint(self) -> None:
        if self.end_comparison():  # F2 first returns a compared answer to the normal tint
            self.refresh_status()
            return
        self.set_tint(TINTS[(TINTS.index(self.tint) + 1) % len(TINTS)])

    def action_toggle_panel(self) -> None:
        self.panel.toggle()
        self._remember(panel=self.panel.wanted)

    def action_toggle_compare(self) -> None:
        self.panel.toggle_compare()
        self._remember(panel=self.panel.wanted, sampled=self.panel.compare)

    def action_status_action(self) -> None:
        """F8: run the slash command a plugin's status item offers (e.g. /finetune load)."""
        action = self.status.info.action
        if not action:
            self.notify("nothing to run: F8 runs what the status bar offers (e.g. /finetune load when a run is done)", timeout=3)
            return
        self.commands.run(action)
        self.refresh_status()
        self.status.poll_plugins()

    async def action_quit(self) -> None:
        self.stream.cancel()
        worker = self.stream.handle
        if worker is not None:
            try:
                await worker.wait()
            except Exception:
                pass
        self.exit()
