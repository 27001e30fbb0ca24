"""The built-in slash commands, and the registry each front end builds from them.

:func:`build_registry` returns a fresh :class:`~chatcli.chat.commands.Registry` with
these commands, the adapter commands (:mod:`chatcli.chat.lora_commands`), the probe
commands ``/lens`` and ``/attention`` (:mod:`chatcli.chat.lens_commands`), ``/whatif``
(:mod:`chatcli.chat.whatif_command`) and the
commands of the plugins it is given: the TUI, the plain REPL and ``chatcli chat``
each build their own, so nothing registered for one front end leaks into another.

``/help``, ``/set``, ``/system``, ``/clear``, ``/new``, ``/retry``, ``/continue``, ``/raw``,
``/save``, ``/history``, ``/resume``, ``/model``, ``/think``, ``/tint`` and ``/quit`` act on the
front end's :class:`~chatcli.chat.core.ChatCore` through the
:class:`~chatcli.chat.commands.CommandContext`.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from rich.console import RenderableType
from rich.style import Style
from rich.table import Table
from rich.text import Text

from chatcli.chat import lens_commands, lora_commands, whatif_command
from chatcli.chat import text_commands
from chatcli.chat.commands import Arg, Command, CommandContext, Registry
from chatcli.chat.frontend import after_redraw
from chatcli.chat.params import resolve_param
from chatcli.errors import ChatcliError, UsageError, did_you_mean


class PluginHost(Protocol):
    """What the chat front ends use of :class:`chatcli.plugins.manager.PluginManager` (chat/ never imports it)."""

    def install_commands(self, registry: Registry) -> list[str]:
        """Add the plugins' commands to ``registry``, reporting (not raising) names already taken."""

    def notify(self, hook: str, **fields: Any) -> None:
        """Send an event hook to the plugins: a :data:`chatcli.chat.core.Listener`."""


def build_registry(plugins: PluginHost | None = None) -> Registry:
    """A fresh registry: the built-in commands, the adapter commands, then ``plugins``' commands."""
    registry = Registry()
    for command in COMMANDS:
        registry.add(command)
    lora_commands.install(registry)
    lens_commands.install(registry)
    whatif_command.install(registry)
    text_commands.install(registry)
    if plugins is not None:
        plugins.install_commands(registry)
    return registry


def _help(ctx: CommandContext, command: str | None = None) -> None:
    if command:
        c = ctx.registry.get(command.lstrip("/"))
        if c is None:
            raise UsageError(f"no command /{command.lstrip('/')}{did_you_mean(command.lstrip('/'), ctx.registry.names(), slash=True)}")
        ctx.say(help_table([c]), "result")
        return
    ctx.say(help_table(ctx.registry.commands(), footer=True), "result")


def help_table(commands: list[Command], footer: bool = False) -> RenderableType:
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0), title="Commands" if footer else None, title_justify="left")
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for c in commands:
        also = f"  [dim](also /{', /'.join(c.aliases)})[/dim]" if c.aliases else ""
        table.add_row(c.usage, c.summary + also)
    if footer:
        table.caption = "//text sends a message that starts with '/'"
        table.caption_justify = "left"
    return table


def _set(ctx: CommandContext, name: str | None = None, value: str | None = None) -> None:
    core = ctx.core
    if name is None:
        table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
        table.add_column(style="bold cyan")
        table.add_column(style="bold")
        table.add_column(style="italic")  # where the value came from: /set, flag, preset, env, config, model, built-in
        table.add_column(style="dim")
        for key, val, help_ in core.param_rows():
            source = core.param_source(key)
            table.add_row(key, val, Text(source, style="dim" if source == "built-in" else "yellow"), help_)
        ctx.say(table, "result")
        return
    if value is None:
        key = resolve_param(name)
        row = next(r for r in core.param_rows() if r[0] == key)
        ctx.say(f"{key} = {row[1]}   (from {core.param_source(key)}; {row[2]})", "result")
        return
    ctx.say(core.set_param(name, value), "info")


def _system(ctx: CommandContext, text: str | None = None) -> None:
    if text is None:
        current = ctx.core.conv.system
        ctx.say(f"system prompt: {current}" if current else "no system prompt (the chat template's default applies)", "result")
        return
    ctx.core.set_system(None if text.strip() == "-" else text)
    ctx.say("system prompt removed" if text.strip() == "-" else "system prompt set; it applies from the next answer", "info")


def _clear(ctx: CommandContext) -> None:
    ctx.core.new_conversation(keep_system=True)
    ctx.conversation_changed()


def _new(ctx: CommandContext) -> None:
    ctx.core.new_conversation(keep_system=False)
    ctx.conversation_changed()
    kept = ctx.core.changed_params()
    if kept:  # said after the redraw, which would clear it
        after_redraw(ctx, ctx.say, f"new conversation; kept /set {' '.join(kept)}", "info")


def _retry(ctx: CommandContext) -> None:
    ctx.run_job(ctx.core.retry())


def _continue(ctx: CommandContext) -> None:
    ctx.run_job(ctx.core.continue_())


def _raw(ctx: CommandContext) -> None:
    """After an answer: the prompt that produced it, then what the next prompt starts with;
    before one: the prompt the next answer will get."""
    core = ctx.core
    leaf = core.conv.leaf
    if leaf is None or leaf.role != "assistant":
        ctx.say(_prompt_text("raw prompt", core.raw_prompt(), core.engine), "result")
        return
    ctx.say(Text.assemble(
        _prompt_text("prompt of the last answer, as rendered when it was generated", core.answer_prompt(leaf), core.engine,
                     answer_id=leaf.id),
        "\n",
        _prompt_text("the next turn's prompt starts with", core.next_prompt_start(), core.engine,
                     "; your message and a new assistant header follow"),
    ), "result")  # fmt: skip


def _prompt_text(title: str, prompt: str, engine, after: str = "", answer_id: int | None = None) -> Text:
    text = Text(prompt)
    text.highlight_regex(r"<\|[^|>]*\|>|<s>|</s>|\[INST\]|\[/INST\]", "bold magenta")
    if answer_id is not None:  # the prompt of that answer: a front end can tint it (the TUI's attention view)
        text.stylize(Style(meta={"prompt_of": answer_id}))
    return Text.assemble(Text(f"{title} ({engine.count_tokens(prompt)} tokens{after}):\n", style="dim"), text)


def _save(ctx: CommandContext, path: str | None = None) -> None:
    md, js = ctx.core.export(path)
    ctx.say(f"saved {md} and {js}", "info")


def _history(ctx: CommandContext, limit: int | None = None) -> None:
    store = ctx.core.store
    if store is None:
        raise UsageError("history is not available in this session (--no-save or no data dir)")
    items = store.list(limit=limit or 20)
    if not items:
        ctx.say("the history is empty", "result")
        return
    ctx.say(history_table(items, current=ctx.core.conv.id), "result")


def history_table(items, current: int | None = None) -> Table:
    table = Table(box=None, padding=(0, 2, 0, 0), header_style="bold")
    table.add_column("id", justify="right", style="cyan")
    table.add_column("updated")
    table.add_column("msgs", justify="right")
    table.add_column("model", style="dim")
    table.add_column("title")
    for s in items:
        mark = " ●" if s.id == current else ""
        table.add_row(f"{s.id}{mark}", time.strftime("%Y-%m-%d %H:%M", time.localtime(s.updated)), str(s.messages), s.model or "", s.title)
    return table


def _resume(ctx: CommandContext, id: int | None = None) -> None:
    conv = ctx.core.resume(id)
    ctx.conversation_changed()
    ctx.say(f"resumed conversation {conv.id}: {conv.title}", "info")


def _model(ctx: CommandContext) -> None:
    ident = ctx.core.identity
    if ident is None:
        raise ChatcliError("the model is still loading; try again in a moment")
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold cyan")
    table.add_column()
    rows = [
        ("name", ident.name), ("type", ident.model_type), ("parameters", f"{ident.parameters:,}"),
        ("dtype / device", f"{ident.dtype} / {ident.device}"), ("context length", f"{ident.context_length:,}"),
        ("path", ident.path), ("sha256", ident.sha256 or "unknown"),
    ]
    for k, v in rows:
        table.add_row(k, str(v))
    ctx.say(table, "result")


def _tint(ctx: CommandContext, mode: str | None = None) -> None:
    modes = ("model_prob", "entropy", "off")
    mode = (mode or "model_prob").lower()
    mode = {"prob": "model_prob", "p": "model_prob", "h": "entropy", "none": "off"}.get(mode, mode)
    if mode not in modes:
        raise UsageError(f"unknown tint {mode!r}{did_you_mean(mode, modes)}; use model_prob, entropy or off")
    ctx.set_tint(mode)


def _think(ctx: CommandContext, state: str | None = None) -> None:
    switch = ctx.core.thinking
    if state is None:
        current = {True: "on", False: "off", None: "the template's default"}[switch.enabled]
        ctx.say(f"thinking: {current} (/think on, off or default; Qwen3-style templates only)", "result")
        return
    ctx.say(switch.set(ctx.core.engine, state), "info")


def _quit(ctx: CommandContext) -> None:
    ctx.quit()


COMMANDS = (
    Command("help", _help, "list commands, or show one command's usage", (Arg("command", optional=True),), aliases=("h", "?")),
    Command("set", _set, "show sampling settings, or change one: /set temperature 0.3", (Arg("name", optional=True), Arg("value", optional=True))),
    Command("system", _system, "show the system prompt, set it (/system TEXT) or remove it (/system -)", (Arg("text", "text", optional=True),)),
    Command("clear", _clear, "start over with the same system prompt and settings (the chat stays in /history)", (), idle_only=True),
    Command("new", _new, "start a new conversation with the default system prompt (/set values are kept)", (), idle_only=True),
    Command("retry", _retry, "regenerate the last answer (the old one stays as a sibling)", (), aliases=("regen",), idle_only=True),
    Command("continue", _continue, "continue a stopped or cut-off answer", (), aliases=("cont",), idle_only=True),
    Command("raw", _raw, "show the exact prompt of the last answer (special tokens included) and how the next one starts"),
    Command("save", _save, "export the conversation as Markdown and JSON (default: ./chatcli-ID.md/.json)", (Arg("path", optional=True),)),
    Command("history", _history, "list saved conversations (newest first)", (Arg("limit", "int", optional=True),), aliases=("ls",)),
    Command("resume", _resume, "reopen a saved conversation (default: the latest)", (Arg("id", "int", optional=True),), aliases=("open",), idle_only=True),
    Command("model", _model, "show the model: name, type, parameters, dtype/device, context length, path"),
    Command("think", _think, "Qwen3-style models: reason first (on), answer at once (off), or the template's default",
            (Arg("state", optional=True, help="on, off or default"),)),
    Command("tint", _tint, "tint answer tokens by certainty: model_prob, entropy or off", (Arg("mode", optional=True),)),
    Command("quit", _quit, "leave (the conversation is already saved)", (), aliases=("exit", "q", "bye")),
)  # fmt: skip
