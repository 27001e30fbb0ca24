"""The status bar: model, dtype/device, adapters, sampling parameters, context used, speed, history id,
the plugins' live status items (e.g. a fine-tuning run's progress), polled every second
from the plugin manager the app hands the bar, and a passing hint (:meth:`StatusBar.flash`).

What it says and which fields give way on a narrow terminal is
:mod:`chatcli.tui.widgets.status_fields`; the bar re-fits on every change and resize.

A plugin item may offer a slash command (``(text, "/finetune load")``): the bar shows
"F8", the app's F8 binding runs it (:attr:`StatusInfo.action`), and a notification
announces it once when it first appears.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.containers import Horizontal
from textual.widgets import Static

from chatcli.tui.widgets.status_fields import StatusInfo, fit, status_fields, zone_content

if TYPE_CHECKING:
    from chatcli.chat.core import ChatCore
    from chatcli.plugins.manager import PluginManager

__all__ = ["HINT_SECONDS", "StatusBar", "StatusInfo"]

HINT_SECONDS = 4.0  # how long a hint stays in the bar


def _adapters_text(engine) -> str:
    if engine is None:
        return ""
    try:
        from chatcli.chat.lora_commands import status_text

        return status_text(engine)
    except Exception:  # a fake or remote engine without adapters
        return ""


class StatusBar(Horizontal):
    def __init__(self, plugins: PluginManager | None = None) -> None:
        super().__init__(id="status")
        self.info = StatusInfo()
        self.plugins = plugins  # whose status items the bar polls (None: no plugins, nothing to ask)
        self._hint_timer = None

    def compose(self):
        yield Static("", id="status-left")
        yield Static("", id="status-plugin")
        yield Static("", id="status-right")

    def on_mount(self) -> None:
        self.query_one("#status-plugin", Static).display = False
        self.set_interval(1.0, self.poll_plugins)

    def poll_plugins(self) -> None:
        """Ask the plugins for their live status (a fine-tuning run's step, loss, ETA...)."""
        items = self.plugins.status_items() if self.plugins is not None else []
        text = "  ·  ".join(t for t, _ in items)
        action = next((c for _, c in reversed(items) if c), None)
        if action and action != self.info.action:
            self.app.notify(f"{text}\nF8 runs {action}", title="ready", timeout=15)
        if (text, action) != (self.info.plugin, self.info.action):
            self.update_info(plugin=text, action=action)

    def show_chat(self, core: ChatCore, *, model: str, tint: str, **changes) -> None:
        """Show the chat's state (model, settings, context used, history id, adapters, tint),
        with ``changes`` (state, speed...) on top."""
        try:
            usage = core.context_usage()
        except Exception:  # no engine yet, or one that cannot count
            usage = None
        self.update_info(
            identity=core.identity, model=model, params=core.conv.params, sources=core.param_sources,
            context=usage, conv_id=core.conv.id,
            saving=core.store is not None, tint=tint, adapters=_adapters_text(core.engine), **changes,
        )

    def flash(self, text: str, seconds: float = HINT_SECONDS) -> None:
        """Show ``text`` in the bar for ``seconds`` (it outranks everything but the state and model)."""
        if self._hint_timer is not None:
            self._hint_timer.stop()
        self.update_info(hint=text)
        self._hint_timer = self.set_timer(seconds, lambda: self.update_info(hint=""))

    def update_info(self, **changes) -> None:
        for k, v in changes.items():
            setattr(self.info, k, v)
        self._render_fields()

    def on_resize(self) -> None:
        self._render_fields()

    def _render_fields(self) -> None:
        fields = fit(status_fields(self.info), self.content_size.width)
        for zone, selector in (("left", "#status-left"), ("middle", "#status-plugin"), ("right", "#status-right")):
            content = zone_content(fields, zone)
            static = self.query_one(selector, Static)
            static.update(content)
            if zone != "left":
                static.display = bool(content.cell_length)
