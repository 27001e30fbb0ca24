"""``chatcli plugins list`` and the lazy CLI sub-commands that plugins add.

:func:`attach` runs in :func:`chatcli.cli.main.main` after the core commands are
built. When the first command word is a core command (``generate``, ``models``,
``chat``...) it returns at once and no plugin is imported. Otherwise (a plugin's
command, ``--help``, no command) it loads the plugins and adds one
:class:`LazyCommand` per registered sub-command: a placeholder that carries the
name and help, and imports ``module:attr`` only when the sub-command runs.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import typer
from typer.core import TyperCommand, _click

from chatcli.errors import ChatcliError

plugins_app = typer.Typer(help="List the installed plugins and what they add.", no_args_is_help=True)


@plugins_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="One JSON array of plugins.")) -> None:
    """Every plugin found: name, version, source, what it adds, status and error."""
    from chatcli.plugins.manager import PluginManager

    problems: list[str] = []
    infos = PluginManager(report=problems.append).list()  # errors show in the table, not twice
    for problem in problems:  # ...but a broken setting (config file) belongs to no plugin's row
        if not problem.startswith("plugin "):
            print(f"chatcli: warning: {problem}", file=sys.stderr)
    if as_json:
        print(json.dumps([i.to_json() for i in infos], ensure_ascii=False, indent=2))
        return
    if not infos:
        print("no plugins installed (see 'Writing a plugin' in the README)")
        return
    from rich.console import Console
    from rich.markup import escape

    # A block per plugin rather than a table: paths and errors stay whole on narrow terminals and in logs.
    console = Console(soft_wrap=True)
    for i in infos:
        status = {"loaded": "[green]loaded[/green]", "disabled": "[dim]disabled[/dim]"}.get(i.status, f"[red]{i.status}[/red]")
        if i.error:
            status += f": {escape(i.error)}"
        console.print(f"[bold]{escape(i.name)}[/bold] {escape(i.version or '-')}  {status}")
        console.print(f"  source: {escape(i.source)}")
        adds = [*i.commands, *(f"chatcli {c}" for c in i.cli), *(f"tui {t}" for t in i.tui)]
        if adds:
            console.print(f"  adds:   {escape(', '.join(adds))}")


class LazyCommand(TyperCommand):
    """A plugin sub-command known by name; its module is imported only when it runs."""

    def __init__(self, name: str, target: str, help: str, plugin: str) -> None:
        super().__init__(name=name, help=help or f"(from plugin {plugin})", short_help=help, add_help_option=False)
        self.target = target
        self.plugin = plugin
        self._real: Any = None

    def real(self) -> Any:
        if self._real is None:
            module_name, _, attr = self.target.partition(":")
            try:
                obj = getattr(importlib.import_module(module_name), attr)
            except Exception as e:
                raise ChatcliError(
                    f"plugin {self.plugin!r} cannot load its command {self.name!r} from {self.target} "
                    f"({type(e).__name__}: {e}); reinstall it or disable it with CHATCLI_PLUGINS"
                ) from None
            if isinstance(obj, typer.Typer):
                obj = typer.main.get_command(obj)
            if not isinstance(obj, _click.Command):
                raise ChatcliError(
                    f"plugin {self.plugin!r}: {self.target} is not a typer.Typer or a command; fix the plugin"
                )
            self._real = obj
        return self._real

    def make_context(self, info_name, args, parent=None, **extra):
        return self.real().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        return self.real().invoke(ctx)

    def get_short_help_str(self, limit: int = 45) -> str:
        return self.short_help or ""


def attach(root: Any, args: list[str]) -> None:
    """Add the plugins' sub-commands to the root command, unless a core command runs."""
    first = next((a for a in args if not a.startswith("-")), None)
    if first is not None and first in root.commands:
        return
    from chatcli.plugins.manager import PluginManager, stderr_report

    manager = PluginManager(report=stderr_report)  # this invocation's; a chat creates its own
    for c in manager.cli_commands():
        if c.name in root.commands:
            if not isinstance(root.commands[c.name], LazyCommand):
                manager.report_problem(f"plugin {c.plugin!r}: the command name {c.name!r} is taken by chatcli; left out")
            continue
        root.add_command(LazyCommand(c.name, c.target, c.help, c.plugin))


def register(app: typer.Typer) -> None:
    app.add_typer(plugins_app, name="plugins")
