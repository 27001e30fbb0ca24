"""The chat app's command palette entries: slash commands, view toggles and plugin screens.

:func:`palette_commands` yields what :meth:`chatcli.tui.app.ChatApp.get_system_commands`
adds to Textual's own entries: every registered slash command (commands with
arguments are put in the prompt to complete, the others run with ``app.commands.run``),
the F2/F3/F4 view toggles, and the ``screen`` TUI extensions of the app's plugin
manager (``app.plugins``), whose factories get ``app.commands``. Only the app's public
surface is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from textual.app import App, SystemCommand

from chatcli.errors import ChatcliError


def palette_commands(app: App) -> Iterable[SystemCommand]:
    """The palette entries of the chat app ``app`` (a ChatApp; tui/app.py imports this module)."""
    for c in app.registry.commands():
        yield SystemCommand(c.usage, c.summary, _command_entry(app, c.name, bool(c.args)))
    yield SystemCommand("Tint tokens by certainty", "cycle off / model_prob / entropy (F2)", app.action_cycle_tint)
    yield SystemCommand("Toggle the probability panel", "show or hide the next-token distribution (F3)", app.action_toggle_panel)
    yield SystemCommand("Show the sampled distribution", "raw model vs what was sampled from (F4)", app.action_toggle_compare)
    for ext in app.plugins.tui_extensions("screen") if app.plugins is not None else ():
        yield SystemCommand(ext.title, f"from the {ext.plugin} plugin", _screen_entry(app, ext))


def _screen_entry(app: App, ext: Any) -> Callable[[], None]:
    def run() -> None:
        try:
            app.push_screen(ext.factory(app.commands))
        except ChatcliError as e:
            app.say(e.message, "error")
        except Exception as e:  # a plugin's bug: one line, the chat goes on
            app.commands.report(f"the {ext.plugin} plugin's screen", e)

    return run


def _command_entry(app: App, name: str, has_args: bool) -> Callable[[], None]:
    def run() -> None:
        if has_args:
            app.prompt.load_text(f"/{name} ")
            app.prompt.move_cursor(app.prompt.document.end)
            app.prompt.focus()
        else:
            app.commands.run(f"/{name}")
            app.refresh_status()

    return run
