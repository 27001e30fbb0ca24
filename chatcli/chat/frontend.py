"""What a chat front end can do, declared once: slash commands read ``ctx.frontend``, never probe.

Every front end implements the basics of :class:`chatcli.chat.commands.CommandContext`
(``say``, ``run_job``, ``adapters_changed``...). Beyond them it declares a :class:`FrontEnd`
record; each ability below names the methods that come with it, and a command calls those
methods only when the ability is declared. This mirrors the engine's
:class:`chatcli.engine.protocol.Capabilities`: the TUI declares all of them, the plain REPL none.

:func:`on_ui_thread` and :func:`after_redraw` are the two ways a command or a plugin
reaches a front end that owns its widgets on one thread (the Textual app); elsewhere
they call at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FrontEnd:
    """One front end's optional abilities; the defaults are a line-based front end's (none)."""

    name: str  # "tui" | "repl" | ..., for messages
    # push_screen(screen, callback=None) and pick_adapter(): full-screen views (/rank, the adapter picker)
    screens: bool = False
    # set_activity(state | None): a status bar that shows a command's long work (the chat counts as busy meanwhile)
    live_status: bool = False
    # show_comparison(node, comparison): /compare tints the answer where it stands instead of printing a copy
    inline_compare: bool = False
    # call_from_thread(fn, *args) and call_later(fn, *args): the widgets belong to one thread, and
    # what a command shows after conversation_changed() must wait for the redraw it queued
    ui_thread: bool = False
    # selected_step() -> (node, index) | None and show_view(name, node, index, **options): a panel with
    # views of one step ("lens", "attention", ...) that /lens, /attention open instead of printing
    panel_views: bool = False

    def unsupported(self, what: str) -> str:
        """The one-line message for an ability this front end lacks."""
        return f"{what} is not available in the {self.name} chat"


def on_ui_thread(ctx: Any, fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` where the front end's widgets live (from any thread).

    Raises RuntimeError when the front end has already closed (Textual's ``call_from_thread``).
    """
    if ctx.frontend.ui_thread:
        ctx.call_from_thread(fn, *args)
    else:
        fn(*args)


def after_redraw(ctx: Any, fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` after the redraw a ``conversation_changed()`` queued (which clears notes)."""
    if ctx.frontend.ui_thread:
        ctx.call_later(fn, *args)
    else:
        fn(*args)
