"""The chat app's key actions (the ``action_*`` methods its BINDINGS and palette call).

Mixed into :class:`chatcli.tui.app.ChatApp`; the bindings with their ids stay
on the app class so keys can be remapped in one place.
"""

from __future__ import annotations

from textual.actions import SkipAction

from chatcli.chat.commands import execute
from chatcli.tui.widgets.answer import AnswerView
from chatcli.tui.widgets.prompt import ChatInput, CommandHints
from chatcli.tui.token_text import TINTS


class ActionsMixin:
    """Esc/Ctrl+C stop, inspect and answer focus, F2 tint, F3 panel, F4 sampled, F8 offer, quit."""

    def action_escape(self) -> None:
        if self.screen is not self.screen_stack[0]:
            raise SkipAction()  # a modal (the command palette) closes itself
        if self.stream.streaming and not self.stream.stopping:
            self.action_stop()
        elif isinstance(self.focused, ChatInput) and self.query_one(CommandHints).display:
            self.query_one(CommandHints).display = False
        elif self.end_comparison():
            pass
        elif not isinstance(self.focused, ChatInput):
            self.prompt.focus()
        elif self.query_one(CommandHints).display:
            self.query_one(CommandHints).display = False
        else:
            raise SkipAction()

    def action_stop(self) -> None:
        if self.stream.cancel():
            self._refresh_status(state="stopping")

    def action_interrupt(self) -> None:
        if self.stream.streaming and not self.stream.stopping:
            self.action_stop()
            return
        raise SkipAction()  # copy in the prompt, or the "Ctrl+Q quits" hint

    def action_focus_input(self) -> None:
        self.prompt.focus()

    def action_inspect(self) -> None:
        answers = self.transcript.answers()
        if not answers:
            self.notify("no answer to inspect yet", timeout=2)
            return
        target = answers[-1]
        if isinstance(self.focused, AnswerView) and self.focused in answers:
            idx = answers.index(self.focused)
            target = answers[max(0, idx - 1)]
        target.focus()
        if target.node.steps:
            target.move_to(target.cursor if target.cursor is not None else len(target.node.steps) - 1)

    def action_focus_answer(self, delta: int) -> None:
        answers = self.transcript.answers()
        if not isinstance(self.focused, AnswerView) or self.focused not in answers:
            return
        idx = answers.index(self.focused) + delta
        if idx >= len(answers):
            self.prompt.focus()
        elif idx >= 0:
            answers[idx].focus()
            answers[idx].scroll_visible(animate=False)

    def action_cycle_tint(self) -> None:
        if self.end_comparison():  # F2 first returns a compared answer to the normal tint
            self._refresh_status()
            return
        self.set_tint(TINTS[(TINTS.index(self.tint) + 1) % len(TINTS)])

    def action_toggle_panel(self) -> None:
        self.panel.display = not self.panel.display

    def action_toggle_compare(self) -> None:
        self.panel.toggle_compare()

    def action_status_action(self) -> None:
        """F8: run the slash command a plugin's status item offers (e.g. /finetune load)."""
        action = self.status.info.action
        if not action:
            self.notify("nothing to run: F8 runs what the status bar offers (e.g. /finetune load when a run is done)", timeout=3)
            return
        execute(self, action)
        self._refresh_status()
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
