"""The chat app's command palette: slash commands, view toggles and plugin screens.

Mixed into :class:`chatcli.tui.app.ChatApp`: every registered slash command is
a palette entry (commands with arguments are put in the prompt to complete),
and the ``screen`` TUI extensions of the app's plugin manager (``app.plugins``) open from here.
"""

from __future__ import annotations

from collections.abc import Iterable

from textual.app import SystemCommand
from textual.screen import Screen

from chatcli.chat.commands import execute
from chatcli.errors import ChatcliError


class PaletteMixin:
    """get_system_commands and the callbacks its entries run."""

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for c in self.registry.commands():
            yield SystemCommand(c.usage, c.summary, self._palette_callback(c.name, bool(c.args)))
        yield SystemCommand("Tint tokens by certainty", "cycle off / model_prob / entropy (F2)", self.action_cycle_tint)
        yield SystemCommand("Toggle the probability panel", "show or hide the next-token distribution (F3)", self.action_toggle_panel)
        yield SystemCommand("Show the sampled distribution", "raw model vs what was sampled from (F4)", self.action_toggle_compare)
        for ext in self.plugins.tui_extensions("screen") if self.plugins is not None else ():
            yield SystemCommand(ext.title, f"from the {ext.plugin} plugin", self._plugin_screen_callback(ext))

    def _plugin_screen_callback(self, ext):
        def run() -> None:
            try:
                self.push_screen(ext.factory(self.commands))
            except ChatcliError as e:
                self.say(e.message, "error")

        return run

    def _palette_callback(self, name: str, has_args: bool):
        def run() -> None:
            if has_args:
                self.prompt.load_text(f"/{name} ")
                self.prompt.move_cursor(self.prompt.document.end)
                self.prompt.focus()
            else:
                execute(self.commands, f"/{name}")
                self.refresh_status()

        return run
