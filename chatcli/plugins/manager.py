"""Plugin discovery and the plugin manager: load, isolate, report, dispatch.

Plugins come from two places, in this order:

* the ``chatcli.plugins`` entry-point group (installed packages; chatcli's own
  first-party plugins in ``plugins/`` are registered the same way), and
* ``.py`` files in ``<config dir>/plugins/`` (files starting with ``_`` are ignored).

Which ones load: ``CHATCLI_PLUGINS=name,name`` (only those), ``none`` (only the
built-in core) or ``all`` (the default); without the variable, the ``plugins``
setting of ``<config dir>/config.toml`` (or ``config.json``) does the same.
Plugins left out are listed as "disabled" and never imported.

Nothing here runs at import time and there is no process-wide manager: the
command line creates a :class:`PluginManager` for the invocation that needs
plugins (``chatcli chat``, ``chatcli plugins list``, a plugin's own sub-command;
``chatcli generate`` never does) and passes it down. The chat front ends take its
commands into their registry, its :meth:`~PluginManager.notify` as the chat core's
event listener, and its status items and TUI screens from it. A plugin that fails
to import, or raises inside a hook, is reported once through the manager's
``report`` callback and skipped; the app and the other plugins go on. Finding
plugins (entry points, user files) is :mod:`chatcli.plugins.discovery`; which ones
load is :mod:`chatcli.plugins.settings`.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from chatcli.errors import describe_bug
from chatcli.plugins import hookspecs
from chatcli.plugins.discovery import GROUP, USER_PREFIX, Candidate, discover  # noqa: F401  (GROUP, USER_PREFIX re-exported)
from chatcli.plugins.settings import parse_selection, selection_setting

REGISTRATION_HOOKS = ("register_commands", "register_cli", "register_tui", "register_graders")

Report = Callable[[str], None]


@dataclass
class PluginInfo:
    """One row of ``chatcli plugins list``."""

    name: str
    source: str  # "entry point (dist NAME)" or "user file PATH"
    version: str | None = None
    status: str = "loaded"  # "loaded" | "error" | "disabled"
    error: str | None = None
    commands: list[str] = field(default_factory=list)  # slash commands, "/name"
    cli: list[str] = field(default_factory=list)  # CLI sub-commands
    tui: list[str] = field(default_factory=list)  # screens and panels

    def to_json(self) -> dict:
        return {
            "name": self.name, "version": self.version, "source": self.source, "status": self.status,
            "error": self.error, "commands": self.commands, "cli": self.cli, "tui": self.tui,
        }


@dataclass(frozen=True)
class CliCommand:
    """A plugin's CLI sub-command, known by name; ``target`` is imported when it runs."""

    name: str
    target: str  # "package.module:attr"
    help: str
    plugin: str


@dataclass(frozen=True)
class GraderRegistration:
    """A plugin's answer grader: ``fn(prompt_messages, answer_text) -> float``, higher is better."""

    name: str
    fn: Callable[[list, str], float]
    help: str
    plugin: str


@dataclass(frozen=True)
class TuiExtension:
    name: str
    factory: Callable[[], Any]
    kind: str  # "screen" | "panel"
    title: str
    plugin: str


class PluginManager:
    """Discovers plugins, registers them with pluggy, calls hooks plugin by plugin."""

    def __init__(
        self,
        *,
        selection: set[str] | None | str = "auto",
        user_dir: Path | None = None,
        report: Report | None = None,
        entry_points: Iterable[Any] | None = None,
    ) -> None:
        self.pm = pluggy.PluginManager("chatcli")
        self.pm.add_hookspecs(hookspecs)
        self._selection_arg = selection
        self._user_dir = user_dir
        self._entry_points = entry_points
        self._report = report
        self.problems: list[str] = []
        self._reported = 0
        self.infos: dict[str, PluginInfo] = {}
        self._lock = threading.RLock()
        self._registrations: dict[str, list] | None = None
        self._loaded = False

    # --- reporting ---------------------------------------------------------------------------

    def set_reporter(self, report: Report | None) -> None:
        """Where problems go from now on; problems not yet shown are shown now."""
        self._report = report
        self._flush()

    def report_problem(self, message: str) -> None:
        self.problems.append(message)
        self._flush()

    def _flush(self) -> None:
        if self._report is None:
            return
        while self._reported < len(self.problems):
            message = self.problems[self._reported]
            self._reported += 1
            try:
                self._report(message)
            except Exception:  # a broken reporter must not break loading
                pass

    # --- discovery ---------------------------------------------------------------------------

    def load(self) -> "PluginManager":
        """Find and import the selected plugins (once)."""
        with self._lock:
            if self._loaded:
                return self
            self._loaded = True
            selection = self._selection()
            candidates = self._discover()
            known = {c.name for c in candidates}
            if selection:
                for name in sorted(selection - known):
                    self.report_problem(f"plugin {name!r} is selected but not installed (known: {', '.join(sorted(known)) or 'none'})")
            for cand in candidates:
                if cand.name in self.infos:
                    self.report_problem(f"plugin {cand.name!r} from {cand.source} has the name of one already found ({self.infos[cand.name].source}); skipped")
                    continue
                info = PluginInfo(cand.name, cand.source, cand.version)
                self.infos[cand.name] = info
                if selection is not None and cand.name not in selection:
                    info.status = "disabled"
                    continue
                try:
                    obj = cand.load()
                    self.pm.register(obj, name=cand.name)
                    info.version = info.version or _version_of(obj)
                except BaseException as e:  # SyntaxError, ImportError, SystemExit in a plugin...
                    if isinstance(e, KeyboardInterrupt):
                        raise
                    info.status, info.error = "error", _describe(e)
                    self.report_problem(f"plugin {cand.name!r} failed to load ({info.error}); skipped")
            return self

    def _selection(self) -> set[str] | None:
        if self._selection_arg != "auto":
            return self._selection_arg  # type: ignore[return-value]
        try:
            value, where = selection_setting()
        except ValueError as e:
            self.report_problem(f"{e}; loading all plugins")
            return None
        try:
            return parse_selection(value)
        except ValueError as e:
            self.report_problem(f"{where}: {e}; loading all plugins")
            return None

    def _discover(self) -> list[Candidate]:
        return discover(self._entry_points, self._user_dir)

    # --- registrations -----------------------------------------------------------------------

    def _collect(self) -> dict[str, list]:
        """Call the registration hooks once, plugin by plugin, and remember what each added."""
        with self._lock:
            if self._registrations is not None:
                return self._registrations
            self.load()
            regs: dict[str, list] = {"commands": [], "cli": [], "tui": [], "graders": []}
            for impl in self._impls("register_commands"):
                def add_command(name, func, summary, args=(), aliases=(), idle_only=False, _p=impl.plugin_name):
                    from chatcli.chat.commands import Command

                    cmd = Command(str(name).lstrip("/"), func, summary, tuple(args), tuple(aliases), idle_only)
                    regs["commands"].append((_p, cmd))
                    self.infos[_p].commands.append("/" + cmd.name)

                self._call_impl(impl, "register_commands", {"register": add_command})
            for impl in self._impls("register_cli"):
                def add_cli(name, target, help="", _p=impl.plugin_name):
                    if not isinstance(target, str) or ":" not in target:
                        raise ValueError(f"CLI target for {name!r} must be 'module:attr', not {target!r}")
                    regs["cli"].append(CliCommand(str(name), target, help, _p))
                    self.infos[_p].cli.append(str(name))

                self._call_impl(impl, "register_cli", {"register": add_cli})
            for impl in self._impls("register_tui"):
                def add_tui(name, factory, kind="screen", title="", _p=impl.plugin_name):
                    if kind not in ("screen", "panel"):
                        raise ValueError(f"TUI kind for {name!r} must be 'screen' or 'panel', not {kind!r}")
                    regs["tui"].append(TuiExtension(str(name), factory, kind, title or str(name), _p))
                    self.infos[_p].tui.append(f"{name} ({kind})")

                self._call_impl(impl, "register_tui", {"register": add_tui})
            for impl in self._impls("register_graders"):
                def add_grader(name, fn, help="", _p=impl.plugin_name):
                    name = str(name)
                    if not callable(fn):
                        raise ValueError(f"grader {name!r} must be a function (prompt_messages, answer_text) -> float")
                    if not name or name.startswith("rule:") or any(c in name for c in "/\\ "):
                        raise ValueError(f"invalid grader name {name!r}: no spaces or slashes, and not 'rule:...'")
                    regs["graders"].append(GraderRegistration(name, fn, str(help), _p))

                self._call_impl(impl, "register_graders", {"register": add_grader})
            # A plugin that failed in a later registration hook is off: drop what it added earlier.
            failed = {n for n, i in self.infos.items() if i.status == "error"}
            regs = {k: [r for r in v if _plugin_of(r) not in failed] for k, v in regs.items()}
            self._registrations = regs
            return regs

    def commands(self) -> list:
        """Slash commands (``chatcli.chat.commands.Command``) the loaded plugins add."""
        return [cmd for _, cmd in self._collect()["commands"]]

    def install_commands(self, registry) -> list[str]:
        """Add the plugins' slash commands to a :class:`chatcli.chat.commands.Registry`; returns their names.

        A command whose name clashes with one already there is reported and left out.
        """
        added = []
        for plugin, cmd in self._collect()["commands"]:
            if registry.get(cmd.name) is cmd:  # installed by an earlier call
                continue
            try:
                registry.add(cmd)
            except ValueError as e:
                self.report_problem(f"plugin {plugin!r}: {e}; its /{cmd.name} is left out")
                continue
            added.append(cmd.name)
        return added

    def cli_commands(self) -> list[CliCommand]:
        return list(self._collect()["cli"])

    def graders(self) -> list[GraderRegistration]:
        """Answer graders the loaded plugins add (a name registered twice: the first one wins, reported)."""
        out: dict[str, GraderRegistration] = {}
        for g in self._collect()["graders"]:
            if g.name in out:
                self.report_problem(f"plugin {g.plugin!r}: grader {g.name!r} is already registered by {out[g.name].plugin!r}; left out")
                continue
            out[g.name] = g
        return list(out.values())

    def tui_extensions(self, kind: str | None = None) -> list[TuiExtension]:
        return [t for t in self._collect()["tui"] if kind is None or t.kind == kind]

    def list(self) -> list[PluginInfo]:
        """Every plugin found, with what it adds (registration hooks are run for this)."""
        self._collect()
        return list(self.infos.values())

    # --- hooks -------------------------------------------------------------------------------

    def notify(self, hook: str, **kwargs: Any) -> None:
        """Send an event hook to every plugin; one that raises is reported and switched off."""
        for impl in self._impls(hook):
            self._call_impl(impl, hook, kwargs)

    def status_items(self) -> list[tuple[str, str | None]]:
        """Each plugin's ``status_item()`` as ``(text, command or None)``; empty ones left out."""
        out: list[tuple[str, str | None]] = []
        for impl in self._impls("status_item"):
            try:
                item = impl.function()
            except Exception as e:
                self._fail(impl.plugin_name, f"raised in status_item ({_describe(e)})")
                continue
            text, command = item if isinstance(item, tuple) else (item, None)
            if text:
                out.append((str(text), str(command) if command else None))
        return out

    def _impls(self, hook: str) -> list:
        caller = getattr(self.pm.hook, hook, None)
        if caller is None:
            raise ValueError(f"unknown hook {hook!r}")
        # pluggy calls the last registered first; plugins run in discovery order here.
        return list(reversed(caller.get_hookimpls()))

    def _call_impl(self, impl, hook: str, kwargs: dict) -> None:
        try:
            impl.function(*[kwargs.get(a) for a in impl.argnames])
        except Exception as e:
            self._fail(impl.plugin_name, f"raised in {hook} ({_describe(e)})")

    def _fail(self, name: str, why: str) -> None:
        with self._lock:
            info = self.infos.get(name)
            if info is None or info.status == "error":
                return
            info.status, info.error = "error", why
            try:
                self.pm.unregister(name=name)
            except Exception:
                pass
        self.report_problem(f"plugin {name!r} {why}; it is switched off for this session")


def _version_of(obj: object) -> str | None:
    v = getattr(obj, "__version__", None)
    return str(v) if v is not None else None


def _describe(e: BaseException) -> str:
    if isinstance(e, SyntaxError) and e.lineno:  # a plugin file that does not parse: say where
        return f"{type(e).__name__}: {e.msg} at line {e.lineno}"
    return describe_bug(e)


def _plugin_of(reg) -> str:
    return reg[0] if isinstance(reg, tuple) else reg.plugin


def stderr_report(message: str) -> None:
    """The CLI's reporter: one warning line on stderr per problem."""
    sys.stderr.write(f"chatcli: warning: {message}\n")
    sys.stderr.flush()
