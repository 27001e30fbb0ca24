"""What a chat front end can do, declared once: slash commands read ``ctx.frontend``, never probe.

Every front end implements the basics of :class:`chatcli.chat.commands.CommandContext`
(``say``, ``run_job``, ``adapters_changed``...). Beyond them it declares a :class:`FrontEnd`
record; each ability below names the methods that come with it, and a command calls those
methods only when the ability is declared. This mirrors the engine's
:class:`chatcli.engine.protocol.Capabilities`: the TUI declares all of them, the plain REPL none.

:func:`on_ui_thread` and :func:`after_redraw` are the two ways a command or a plugin
reaches a front end that owns its widgets on one thread (the Textual app); elsewhere
they call at once. :func:`in_background` runs a command's long computation off that
thread (``/lora-layers``) and shows its result there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chatcli.errors import ChatcliError, describe_bug


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


def in_background(ctx: Any, what: str, work: Callable[[Any], Any], show: Callable[[Any], None]) -> None:
    """``show(work(progress))`` for a command's long computation: ``work`` on a thread of its own
    where the front end owns its widgets on one (``show`` back on that one; with ``live_status`` the status
    bar says ``what`` and ``progress(done, total)``'s count, and the chat counts as busy), at once
    elsewhere (``progress`` is None). A ``ChatcliError`` or a bug there is one error line."""
    if not ctx.frontend.ui_thread:
        show(work(None))
        return
    status = ctx.frontend.live_status

    def to_ui(fn, *args) -> None:
        try:
            on_ui_thread(ctx, fn, *args)
        except RuntimeError:  # the app closed meanwhile
            pass

    def progress(done: int, total: int) -> None:
        if status:
            to_ui(ctx.set_activity, f"{what} {done}/{total}")

    def finish(result: Any, error: str | None) -> None:
        if status:
            ctx.set_activity(None)
        if error is not None:
            ctx.say(error, "error")
        else:
            show(result)

    def body() -> None:
        try:
            result = work(progress)
        except ChatcliError as e:
            to_ui(finish, None, e.message)
        except Exception as e:  # a bug: one line, the chat goes on
            to_ui(finish, None, f"{what} failed: {describe_bug(e)}")
        else:
            to_ui(finish, result, None)

    if status:
        ctx.set_activity(what)
    threading.Thread(target=body, name=f"chatcli-{what.strip('/')}", daemon=True).start()
