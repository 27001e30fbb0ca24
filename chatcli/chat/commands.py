"""Slash commands: the registry and parser the TUI, the plain REPL and plugins share.

A command is a function ``func(ctx, **args)`` registered with a one-line summary
and an argument spec; ``/help``, ``/`` completion and the command palette are all
generated from a front end's :class:`Registry` (each front end builds its own with
:func:`chatcli.chat.builtin_commands.build_registry`; nothing here is global).
:func:`execute` parses a line, and on a bad command or bad arguments reports one
line through ``ctx.say(..., "error")`` and changes nothing. A line starting with
``//`` is a message that starts with ``/``. A registry's observers
(:meth:`Registry.observe`) hear each command that ran without error, with its arguments.

Front ends implement :class:`CommandContext`: they own rendering and the way a
generation runs (a worker thread in the TUI, a loop in the REPL), and declare their
optional abilities in ``ctx.frontend`` (:class:`chatcli.chat.frontend.FrontEnd`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from rich.console import RenderableType

from chatcli.chat.frontend import FrontEnd
from chatcli.errors import ChatcliError, UsageError, did_you_mean

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
    _observers: list[Callable[[str, dict[str, Any]], None]] = field(default_factory=list)

    def observe(self, fn: Callable[[str, dict[str, Any]], None]) -> None:
        """Call ``fn(name, args)`` after each command that ran without error (the guided tour watches them)."""
        self._observers.append(fn)

    def ran(self, cmd: Command, args: dict[str, Any]) -> None:
        for fn in self._observers:
            fn(cmd.name, args)

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
    """What every front end offers commands; the optional abilities are declared in ``frontend``."""

    core: Any  # chatcli.chat.core.ChatCore
    registry: Registry
    frontend: FrontEnd

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

    def adapters_changed(self) -> None:
        """An adapter was loaded, switched or unloaded: show the active ones (a status bar, a line)."""

    def quit(self) -> None: ...


def execute(ctx: CommandContext, line: str) -> bool:
    """Run one command line. Errors are reported through ``ctx.say``; returns True on success."""
    try:
        cmd, kwargs = ctx.registry.parse(line)
        if cmd.idle_only and ctx.busy:
            raise UsageError(f"/{cmd.name} has to wait: the model is busy (an answer or /rank is running; Esc stops it)")
        cmd.func(ctx, **kwargs)
        ctx.registry.ran(cmd, kwargs)
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
