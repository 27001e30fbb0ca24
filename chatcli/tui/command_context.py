"""What slash commands and plugins call on the TUI: :class:`TuiCommandContext`, a
:class:`chatcli.chat.commands.CommandContext` over the chat app.

The app builds one (``app.commands``) and runs every slash command, palette entry
and F8 offer with it, and hands it to plugins' screen factories. It keeps no state
of its own: it holds the app and calls the app's public methods and widgets
(``say``, ``start_job``, ``redraw``, ``set_tint``, ``set_activity``,
``refresh_status``, ``end_comparison``, ``transcript``, ``panel``). Its ``frontend``
declares what the TUI can do beyond the basics.

A bug in a command never takes the chat down: :meth:`TuiCommandContext.run` (every
command line the TUI runs) and the callbacks a command hands back (``run_job``,
``call_later``, ``call_from_thread``...) turn an exception that is not a
``ChatcliError`` into one error line in the transcript (:func:`chatcli.tui.crash.command_error`).
"""

from __future__ import annotations

import inspect
import os
import shlex
from collections.abc import Callable
from typing import Any

from rich.console import RenderableType
from textual.app import App

from chatcli.chat.commands import execute
from chatcli.chat.core import Job
from chatcli.chat.frontend import FrontEnd
from chatcli.tui.crash import command_error, plain_traceback
from chatcli.tui.widgets.compare_view import comparison_note


class TuiCommandContext:
    """The chat app as slash commands see it (``app`` is the :class:`chatcli.tui.app.ChatApp`)."""

    # Declared for commands and plugins: push_screen/pick_adapter, set_activity, show_comparison,
    # call_from_thread/call_later, selected_step/show_view all exist here.
    frontend = FrontEnd("full-screen", screens=True, live_status=True, inline_compare=True, ui_thread=True,
                        panel_views=True)

    def __init__(self, app: App) -> None:
        self.app = app  # the ChatApp (typed as App: tui/app.py imports this module, not the reverse)

    @property
    def core(self) -> Any:
        return self.app.core

    @property
    def registry(self) -> Any:
        return self.app.registry

    @property
    def busy(self) -> bool:
        return self.app.busy

    def say(self, message: RenderableType, kind: str = "info") -> None:
        self.app.say(message, kind)

    def run(self, line: str) -> bool:
        """Run the command line ``line`` (typed, from the palette, F8, a picker); True on success.

        A ``ChatcliError`` is the command's own one-line message (``execute`` says it); any
        other exception is a bug, reported as one error line, and the chat goes on.
        """
        try:
            return execute(self, line)
        except Exception as e:
            self.report(line.split()[0] if line.split() else line, e)
            return False

    def report(self, where: str, error: Exception) -> None:
        """``error`` escaped ``where``: one line in the transcript (and the traceback under --debug)."""
        self.app.say(command_error(where, error), "error")
        if getattr(self.app, "tracebacks", False):
            self.app.say(plain_traceback(error), "info")

    def _guarded(self, fn: Callable[..., Any], where: str) -> Callable[..., Any]:
        """``fn`` (sync or async) with an exception turned into :meth:`report`'s line."""

        async def call(*args: Any) -> Any:
            try:
                result = fn(*args)
                return await result if inspect.isawaitable(result) else result
            except Exception as e:
                self.report(where, e)
                return None

        return call

    def run_job(self, job: Job) -> None:
        self.app.call_later(self._guarded(self.app.start_job, "a command's answer"), job)

    def conversation_changed(self) -> None:
        self.app.call_later(self._guarded(self.app.redraw, "the redraw after a command"))

    def set_tint(self, mode: str) -> None:
        self.app.set_tint(mode)

    def quit(self) -> None:
        self.app.call_later(self.app.action_quit)

    def adapters_changed(self) -> None:
        """Called by the adapter commands: the status bar shows the active adapters."""
        self.app.refresh_status()

    # --- live_status ---------------------------------------------------------------------------

    def set_activity(self, state: str | None) -> None:
        """A command's own generation (``/rank`` making candidates) runs: the status bar shows
        ``state`` and the chat counts as busy (idle-only commands wait); None: it ended."""
        self.app.set_activity(state)

    # --- ui_thread: the widgets belong to the app's thread ---------------------------------------

    def call_from_thread(self, fn, *args) -> Any:
        """Run ``fn(*args)`` on the UI thread from a command's background thread (None if it raised)."""
        return self.app.call_from_thread(self._guarded(fn, _name(fn)), *args)

    def call_later(self, fn, *args) -> Any:
        return self.app.call_later(self._guarded(fn, _name(fn)), *args)

    # --- screens ---------------------------------------------------------------------------------

    def push_screen(self, screen, callback=None) -> Any:
        return self.app.push_screen(screen, callback)

    def pick_adapter(self) -> None:
        """Called by /load-lora with no argument: choose from the adapters found by name."""
        from chatcli.tui.widgets.adapter_picker import AdapterPicker, find_adapters

        entries = find_adapters()
        if not entries:
            self.say("no adapters in ./adapters, the demo adapters or the user adapter dir: /load-lora PATH loads one", "info")
            return
        mgr = getattr(self.core.engine, "adapters", None)
        loaded = list(mgr.names) if mgr is not None else []

        def chosen(path) -> None:
            if path is not None:  # /load-lora splits its argument like a shell (not on Windows)
                self.run("/load-lora " + (shlex.quote(str(path)) if os.name != "nt" else f'"{path}"'))
                self.app.refresh_status()

        self.push_screen(AdapterPicker(entries, loaded), chosen)

    # --- inline_compare ----------------------------------------------------------------------

    def show_comparison(self, node, comparison) -> None:
        """Called by /compare: tint the answer by per-token KL; its tokens show base vs adapter in the panel.

        The same comparison again (nothing changed since) switches it off, like Esc or F2.
        """
        app = self.app
        view = app.transcript.view_for(node.id)
        shown = app.transcript.compared
        previous = shown.comparison if shown is not None else None
        app.end_comparison()
        if view is None or view.node is not node or len(comparison.steps) != len(node.steps):
            # not on screen (another branch is shown): the transcript gets the printed copy
            from chatcli.chat.lora_views import comparison_view

            self.say(comparison_view(comparison), "result")
            return
        if shown is view and previous == comparison:
            app.notify("comparison off: normal tinting", timeout=2)
            return
        view.set_comparison(comparison)
        self.say(comparison_note(comparison), "result")
        app.panel.pin()  # the side-by-side distributions are the point, whatever the width
        if comparison.steps:  # the panel shows the step that moved most; the focus stays in the prompt
            view.move_to(comparison.max_step.index)


    # --- panel_views ---------------------------------------------------------------------------

    def selected_step(self) -> tuple[Any, int] | None:
        """The step the probability panel shows (node, index): the inspected token, else the last
        step of the latest answer; None before any."""
        return self.app.panel.selected

    def show_view(self, name: str, node: Any, index: int, **options: Any) -> None:
        """Open the panel's view ``name`` ("what-if", "lens", "attention") on step ``index`` of
        ``node``, with ``options`` for the view; the token gets the inspector's cursor."""
        app = self.app
        app.panel.selected = (node, index)
        app.open_panel_view(name, **options)
        answer = app.transcript.view_for(node.id)
        if answer is not None and answer.node is node and answer.cursor != index:
            answer.move_to(index)


def _name(fn: Any) -> str:
    """A callback's name for the error line ("a command's callback" when it has none)."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return f"{name}()" if name and "<lambda>" not in name else "a command's callback"
