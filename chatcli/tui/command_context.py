"""The app's :class:`chatcli.chat.commands.CommandContext` surface: what slash commands call on the TUI.

Mixed into :class:`chatcli.tui.app.ChatApp` (it relies on the app's ``core``,
``transcript``, ``panel`` and status refresh). The comparison methods
(``show_comparison``/``end_comparison``) and ``set_tint`` are the app's own.
"""

from __future__ import annotations

import os
import shlex

from rich.console import RenderableType

from chatcli.chat.commands import execute
from chatcli.chat.core import Job
from chatcli.chat.frontend import FrontEnd
from chatcli.tui.messages import EngineNotice


class CommandContextMixin:
    """busy / set_activity / say / run_job / conversation_changed / quit / pick_adapter / adapters_changed."""

    # Declared for commands and plugins: push_screen/pick_adapter, set_activity, show_comparison,
    # call_from_thread/call_later all exist here.
    frontend = FrontEnd("full-screen", screens=True, live_status=True, inline_compare=True, ui_thread=True)
    _activity: str | None = None  # a command's long-running work (set_activity), shown as the status state

    @property
    def busy(self) -> bool:
        return self.stream.streaming or self._activity is not None

    def set_activity(self, state: str | None) -> None:
        """A command's own generation (``/rank`` making candidates) runs: the status bar shows
        ``state`` and the chat counts as busy (idle-only commands wait); None: it ended."""
        self._activity = state
        self._refresh_status(state=state or ("ready" if self.core.engine is not None else "no model"))

    def say(self, message: RenderableType, kind: str = "info") -> None:
        self.transcript.add_note(message, kind)
        if kind == "error":
            self.bell()

    def run_job(self, job: Job) -> None:
        self.call_later(self.start_job, job)

    def conversation_changed(self) -> None:
        self.call_later(self._redraw)

    def quit(self) -> None:
        self.call_later(self.action_quit)

    def pick_adapter(self) -> None:
        """Called by /load-lora with no argument: choose from the adapters found by name."""
        from chatcli.tui.widgets.adapter_picker import AdapterPicker, find_adapters

        entries = find_adapters()
        if not entries:
            self.say("no adapters in ./adapters, the demo adapters or the user adapter dir: /load-lora PATH loads one", "info")
            return
        engine = self.core.engine
        mgr = getattr(engine, "adapters", None)
        loaded = list(mgr.names) if mgr is not None else []

        def chosen(path) -> None:
            if path is not None:  # /load-lora splits its argument like a shell (not on Windows)
                execute(self, "/load-lora " + (shlex.quote(str(path)) if os.name != "nt" else f'"{path}"'))
                self._refresh_status()

        self.push_screen(AdapterPicker(entries, loaded), chosen)

    def adapters_changed(self) -> None:
        """Called by the adapter commands: the status bar shows the active adapters."""
        self._refresh_status()

    def _notice_from_core(self, message: str, kind: str) -> None:
        # May run in the generation worker thread; post_message is the thread-safe way in.
        self.post_message(EngineNotice(message, kind))
