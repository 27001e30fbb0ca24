"""Slash commands: one registry and parser shared by the TUI, the plain REPL and plugins.

A command is a function ``func(ctx, **args)`` registered with a one-line summary
and an argument spec; ``/help``, ``/`` completion and the command palette are all
generated from :data:`REGISTRY`. :func:`execute` parses a line, and on a bad
command or bad arguments reports one line through ``ctx.say(..., "error")`` and
changes nothing. A line starting with ``//`` is a message that starts with ``/``.

Front ends implement :class:`CommandContext`: they own rendering and the way a
generation runs (a worker thread in the TUI, a loop in the REPL).
"""

from __future__ import annotations

import difflib
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from chatcli.errors import ChatcliError, UsageError

# --- the registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arg:
    name: str
    kind: str = "word"  # "word" | "int" | "text" (the rest of the line, spaces included)
    optional: bool = False
    help: str = ""

    def usage(self) -> str:
        label = self.name.upper() + ("..." if self.kind == "text" else "")
        return f"[{label}]" if self.optional else label


@dataclass(frozen=True)
class Command:
    name: str
    func: Callable[..., Any]
    summary: str  # one line, shown by /help and the palette
    args: tuple[Arg, ...] = ()
    aliases: tuple[str, ...] = ()
    idle_only: bool = False  # refuses while an answer streams (it would change the conversation under it)

    @property
    def usage(self) -> str:
        return " ".join([f"/{self.name}", *(a.usage() for a in self.args)])


@dataclass
class Registry:
    _commands: dict[str, Command] = field(default_factory=dict)
    _aliases: dict[str, str] = field(default_factory=dict)

    def add(self, cmd: Command) -> Command:
        for key in (cmd.name, *cmd.aliases):
            if key in self._commands or key in self._aliases:
                raise ValueError(f"command /{key} is already registered")
        self._commands[cmd.name] = cmd
        for alias in cmd.aliases:
            self._aliases[alias] = cmd.name
        return cmd

    def command(self, name: str, summary: str, *args: Arg, aliases: tuple[str, ...] = (), idle_only: bool = False):
        """Decorator form of :meth:`add`."""

        def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
            self.add(Command(name, func, summary, tuple(args), aliases, idle_only))
            return func

        return wrap

    def get(self, name: str) -> Command | None:
        name = name.lower()
        return self._commands.get(self._aliases.get(name, name))

    def commands(self) -> list[Command]:
        return sorted(self._commands.values(), key=lambda c: c.name)

    def names(self) -> list[str]:
        return sorted([*self._commands, *self._aliases])

    def complete(self, prefix: str) -> list[Command]:
        """Commands whose name (or an alias) starts with ``prefix`` (without the slash)."""
        prefix = prefix.lower()
        seen: dict[str, Command] = {}
        for key in self.names():
            if key.startswith(prefix):
                cmd = self.get(key)
                if cmd is not None:
                    seen.setdefault(cmd.name, cmd)
        return sorted(seen.values(), key=lambda c: (not c.name.startswith(prefix), c.name))

    def parse(self, line: str) -> tuple[Command, dict[str, Any]]:
        """``/name args`` -> (command, keyword arguments). Raises :class:`UsageError`."""
        body = line.strip()
        if not body.startswith("/"):
            raise UsageError("commands start with /; /help lists them")
        body = body[1:]
        name, _, rest = body.partition(" ")
        if "\n" in name:
            name, _, more = name.partition("\n")
            rest = more + " " + rest
        if not name:
            raise UsageError("empty command; /help lists them")
        cmd = self.get(name)
        if cmd is None:
            raise UsageError(f"unknown command /{name}{did_you_mean(name.lower(), self.names(), slash=True)}; /help lists them")
        return cmd, _parse_args(cmd, rest)


def did_you_mean(word: str, choices: Iterable[str], *, slash: bool = False) -> str:
    """' (did you mean X?)' for the closest choice, or ''."""
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close:
        close = [c for c in choices if c.startswith(word[:2])][:1] if len(word) >= 2 else []
    if not close:
        return ""
    return f" (did you mean {'/' if slash else ''}{close[0]}?)"


_TOKEN = re.compile(r"""\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+))""")


def _parse_args(cmd: Command, rest: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pos = 0
    for arg in cmd.args:
        if arg.kind == "text":
            text = rest[pos:].strip()
            if not text and not arg.optional:
                raise UsageError(f"/{cmd.name} needs {arg.name.upper()}; usage: {cmd.usage}")
            out[arg.name] = text or None
            pos = len(rest)
            continue
        m = _TOKEN.match(rest, pos)
        if m is None or not m.group(0).strip():
            if not arg.optional:
                raise UsageError(f"/{cmd.name} needs {arg.name.upper()}; usage: {cmd.usage}")
            out[arg.name] = None
            continue
        pos = m.end()
        value = m.group(1) if m.group(1) is not None else m.group(2) if m.group(2) is not None else m.group(3)
        if m.group(1) is not None:
            value = re.sub(r"\\(.)", r"\1", value)
        if arg.kind == "int":
            try:
                value = int(value)
            except ValueError:
                raise UsageError(f"/{cmd.name}: {arg.name.upper()} must be an integer, not {value!r}; usage: {cmd.usage}") from None
        out[arg.name] = value
    if rest[pos:].strip():
        raise UsageError(f"too many arguments for /{cmd.name}; usage: {cmd.usage}")
    return out


# --- what a front end provides -----------------------------------------------------------------


class CommandContext(Protocol):
    core: Any  # chatcli.chat.core.ChatCore
    registry: Registry

    @property
    def busy(self) -> bool:
        """True while an answer streams."""

    def say(self, message: RenderableType, kind: str = "info") -> None:
        """Show a result, a note or a one-line error ("info" | "warning" | "error" | "result")."""

    def run_job(self, job: Any) -> None:
        """Stream a :class:`chatcli.chat.core.Job` the front end's way."""

    def conversation_changed(self) -> None:
        """The current conversation was replaced or rewound: redraw it."""

    def set_tint(self, mode: str) -> None:
        """Tint answers by "model_prob", "entropy", or "off"."""

    def quit(self) -> None: ...


def execute(ctx: CommandContext, line: str) -> bool:
    """Run one command line. Errors are reported through ``ctx.say``; returns True on success."""
    try:
        cmd, kwargs = ctx.registry.parse(line)
        if cmd.idle_only and ctx.busy:
            raise UsageError(f"/{cmd.name} has to wait: the model is busy (an answer or /rank is running; Esc stops it)")
        cmd.func(ctx, **kwargs)
        return True
    except ChatcliError as e:
        ctx.say(e.message, "error")
        return False


def is_command(line: str) -> bool:
    """A command line (``/name ...``); ``//...`` is a message that starts with a slash."""
    s = line.lstrip()
    return s.startswith("/") and not s.startswith("//")


def message_text(line: str) -> str:
    """The message a line sends (``//x`` -> ``/x``)."""
    s = line.strip()
    return s[1:] if s.startswith("//") else s


# --- the built-in commands ---------------------------------------------------------------------

REGISTRY = Registry()
cmd = REGISTRY.command


@cmd("help", "list commands, or show one command's usage", Arg("command", optional=True), aliases=("h", "?"))
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


@cmd("set", "show sampling settings, or change one: /set temperature 0.3", Arg("name", optional=True), Arg("value", optional=True))
def _set(ctx: CommandContext, name: str | None = None, value: str | None = None) -> None:
    core = ctx.core
    if name is None:
        table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
        table.add_column(style="bold cyan")
        table.add_column(style="bold")
        table.add_column(style="dim")
        for key, val, help_ in core.param_rows():
            table.add_row(key, val, help_)
        ctx.say(table, "result")
        return
    if value is None:
        from chatcli.chat.core import resolve_param

        key = resolve_param(name)
        row = next(r for r in core.param_rows() if r[0] == key)
        ctx.say(f"{key} = {row[1]}   ({row[2]})", "result")
        return
    ctx.say(core.set_param(name, value), "info")


@cmd("system", "show the system prompt, set it (/system TEXT) or remove it (/system -)", Arg("text", "text", optional=True))
def _system(ctx: CommandContext, text: str | None = None) -> None:
    if text is None:
        current = ctx.core.conv.system
        ctx.say(f"system prompt: {current}" if current else "no system prompt (the chat template's default applies)", "result")
        return
    ctx.core.set_system(None if text.strip() == "-" else text)
    ctx.say("system prompt removed" if text.strip() == "-" else "system prompt set; it applies from the next answer", "info")


@cmd("clear", "start over with the same system prompt and settings (the chat stays in /history)", idle_only=True)
def _clear(ctx: CommandContext) -> None:
    ctx.core.new_conversation(keep_settings=True)
    ctx.conversation_changed()


@cmd("new", "start a new conversation with the default settings", idle_only=True)
def _new(ctx: CommandContext) -> None:
    ctx.core.new_conversation(keep_settings=False)
    ctx.conversation_changed()


@cmd("retry", "regenerate the last answer (the old one stays as a sibling)", idle_only=True, aliases=("regen",))
def _retry(ctx: CommandContext) -> None:
    ctx.run_job(ctx.core.retry())


@cmd("continue", "continue a stopped or cut-off answer", idle_only=True, aliases=("cont",))
def _continue(ctx: CommandContext) -> None:
    ctx.run_job(ctx.core.continue_())


@cmd("raw", "show the exact prompt string the model sees, special tokens included")
def _raw(ctx: CommandContext) -> None:
    prompt = ctx.core.raw_prompt()
    text = Text(prompt)
    text.highlight_regex(r"<\|[^|>]*\|>|<s>|</s>|\[INST\]|\[/INST\]", "bold magenta")
    n = ctx.core.engine.count_tokens(prompt)
    ctx.say(Text.assemble(Text(f"raw prompt ({n} tokens):\n", style="dim"), text), "result")


@cmd("save", "export the conversation as Markdown and JSON (default: ./chatcli-ID.md/.json)", Arg("path", optional=True))
def _save(ctx: CommandContext, path: str | None = None) -> None:
    md, js = ctx.core.export(path)
    ctx.say(f"saved {md} and {js}", "info")


@cmd("history", "list saved conversations (newest first)", Arg("limit", "int", optional=True), aliases=("ls",))
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


@cmd("resume", "reopen a saved conversation (default: the latest)", Arg("id", "int", optional=True), idle_only=True, aliases=("open",))
def _resume(ctx: CommandContext, id: int | None = None) -> None:
    conv = ctx.core.resume(id)
    ctx.conversation_changed()
    ctx.say(f"resumed conversation {conv.id}: {conv.title}", "info")


@cmd("model", "show the model: name, type, parameters, dtype/device, context length, path")
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


@cmd("tint", "tint answer tokens by certainty: model_prob, entropy or off", Arg("mode", optional=True))
def _tint(ctx: CommandContext, mode: str | None = None) -> None:
    modes = ("model_prob", "entropy", "off")
    mode = (mode or "model_prob").lower()
    mode = {"prob": "model_prob", "p": "model_prob", "h": "entropy", "none": "off"}.get(mode, mode)
    if mode not in modes:
        raise UsageError(f"unknown tint {mode!r}{did_you_mean(mode, modes)}; use model_prob, entropy or off")
    ctx.set_tint(mode)


@cmd("quit", "leave (the conversation is already saved)", aliases=("exit", "q", "bye"))
def _quit(ctx: CommandContext) -> None:
    ctx.quit()
