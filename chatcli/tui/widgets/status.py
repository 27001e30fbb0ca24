"""The status bar: model, dtype/device, adapters, sampling parameters, context used, speed, history id,
and the plugins' live status items (e.g. a fine-tuning run's progress), polled every second
from the plugin manager the app hands the bar.

A plugin item may offer a slash command (``(text, "/finetune load")``): the bar shows
"F8", the app's F8 binding runs it (:attr:`StatusInfo.action`), and a notification
announces it once when it first appears.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.containers import Horizontal
from textual.content import Content
from textual.widgets import Static

from chatcli.engine.protocol import ModelIdentity
from chatcli.engine.params import SamplingParams
from chatcli.tui.token_text import bar

if TYPE_CHECKING:
    from chatcli.chat.core import ChatCore
    from chatcli.plugins.manager import PluginManager

STATE_STYLE = {
    "ready": "$success", "writing": "$accent", "ranking": "$accent", "stopping": "$warning", "loading": "$warning",
    "no model": "$error",
}


@dataclass
class StatusInfo:
    state: str = "loading"  # "loading" | "ready" | "writing" | "ranking" (/rank generating) | "stopping" | "no model"
    model: str = ""
    identity: ModelIdentity | None = None
    params: SamplingParams | None = None
    context: tuple[int, int] | None = None  # (used, length)
    tokens_per_s: float | None = None
    live_tokens: int = 0
    conv_id: int | None = None
    saving: bool = True
    tint: str = "off"
    adapters: str = ""  # "lora: sft×0.5, dpo (merged)", or "" for none
    plugin: str = ""  # the plugins' live status items, joined
    action: str | None = None  # the slash command F8 runs (offered by a plugin item), if any


def _fmt_k(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 10_000 else f"{n:,}"


def left_content(info: StatusInfo) -> Content:
    state = info.state + (f" {info.live_tokens}" if info.state == "writing" and info.live_tokens else "")
    style = STATE_STYLE.get(info.state, "")
    parts: list = [("● ", style), (state, f"bold {style}"), "  "]
    ident = info.identity
    parts += [(ident.name if ident else info.model or "…", "bold")]
    if ident is not None:
        parts += [(f" {ident.precision}/{ident.device}", "$text-muted")]
    p = info.params
    if p is not None:
        # Temperature, length and seed always; the filters only while they are on.
        items = [("T", "greedy" if p.greedy else f"{p.temperature:g}")]
        if p.top_k:
            items.append(("top-k", str(p.top_k)))
        if p.top_p < 1:
            items.append(("top-p", f"{p.top_p:g}"))
        if p.min_p > 0:
            items.append(("min-p", f"{p.min_p:g}"))
        if p.repetition_penalty != 1:
            items.append(("rep", f"{p.repetition_penalty:g}"))
        items += [("max", str(p.max_tokens)), ("seed", "random" if p.seed is None else str(p.seed))]
        parts.append(("  │", "$text-muted"))
        for k, v in items:
            parts += [(f" {k} ", "$text-muted"), (v, "")]
    if info.adapters:
        parts += [("  │ ", "$text-muted"), (info.adapters, "bold $secondary")]
    else:
        parts += [("  │ adapters ", "$text-muted"), ("none", "")]
    return Content.assemble(*parts)


def plugin_content(info: StatusInfo) -> Content:
    if not info.plugin:
        return Content("")
    parts: list = [(info.plugin, "$warning")]
    if info.action:
        parts += [("  F8", "bold $accent"), (f" {info.action}", "$text-muted")]
    return Content.assemble(*parts)


def right_content(info: StatusInfo) -> Content:
    parts: list = []
    if info.context is not None:
        used, total = info.context
        frac = used / total if total else 0
        style = "$error" if frac > 0.9 else "$warning" if frac > 0.7 else "$primary"
        parts += [("ctx ", "$text-muted"), (f"{_fmt_k(used)}/{_fmt_k(total)} ", ""), (bar(frac, 6), style), "  "]
    if info.tokens_per_s:
        parts += [(f"{info.tokens_per_s:.1f}", "bold"), (" tok/s  ", "$text-muted")]
    if not info.saving:
        parts += [("not saved", "$warning")]
    elif info.conv_id is not None:
        parts += [("#", "$text-muted"), (str(info.conv_id), "")]
    return Content.assemble(*parts)


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
            identity=core.identity, model=model, params=core.conv.params, context=usage, conv_id=core.conv.id,
            saving=core.store is not None, tint=tint, adapters=_adapters_text(core.engine), **changes,
        )

    def update_info(self, **changes) -> None:
        for k, v in changes.items():
            setattr(self.info, k, v)
        self.query_one("#status-left", Static).update(left_content(self.info))
        plugin = self.query_one("#status-plugin", Static)
        plugin.display = bool(self.info.plugin)
        plugin.update(plugin_content(self.info))
        self.query_one("#status-right", Static).update(right_content(self.info))
