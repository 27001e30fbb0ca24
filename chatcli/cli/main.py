"""The ``chatcli`` command line: a thin typer layer over the engine and the front ends.

Every failure ends as one line on stderr (no traceback, no multi-line usage
panel) and a documented exit code: 0 success, 1 runtime error, 2 usage error,
130 interrupted. ``--debug`` (or ``CHATCLI_DEBUG=1``) shows tracebacks.
Heavy imports (torch, textual) happen inside commands so ``--help`` is instant.
"""

from __future__ import annotations

import os
import sys

import typer

# typer >= 0.26 (pyproject's floor) carries its own copy of click and raises only that copy's
# errors, so they are caught from there; the separate `click` package is not a dependency.
from typer._click import exceptions as _click_errors

_UsageErrors = (_click_errors.UsageError,)
_Aborts = (typer.Abort, KeyboardInterrupt)
_NoArgsHelp = _click_errors.NoArgsIsHelpError
_ClickErrors = (_click_errors.ClickException,)

from chatcli import __version__
from chatcli.errors import ChatcliError

app = typer.Typer(
    name="chatcli",
    help="A terminal laboratory for small local language models: chat and see every "
    "next-token distribution.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_debug = False


def _version(value: bool) -> None:
    if value:
        print(f"chatcli {__version__}")
        raise typer.Exit()


def _completion_flag(ctx: typer.Context, param, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from chatcli.cli.completion import run_flag

        run_flag(param.opts[0], None)  # `chatcli --install-completion bash` (a shell named) is handled in main()
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
    install_completion: bool = typer.Option(
        False, "--install-completion", callback=_completion_flag, is_eager=True, expose_value=False,
        help="Install tab completion for this shell (or name one: --install-completion bash|zsh|fish|powershell).",
    ),
    show_completion: bool = typer.Option(
        False, "--show-completion", callback=_completion_flag, is_eager=True, expose_value=False,
        help="Print the completion script for this shell (or the one named), to install it yourself.",
    ),
) -> None:
    global _debug
    _debug = debug or _debug


_registered: set[str] = set()  # the modules whose commands are on ``app`` (main() may run many times)

# The core command each first word names, by the module that registers it: ``chatcli generate ...``
# imports and builds that command alone. Importing every command module and building every command's
# options took ~0.1 s of each start (issue 18); --help, Tab and any other word register them all.
_MODULE_OF = {
    "generate": "generate", "serve": "serve", "tokenize": "inspect", "score": "inspect", "lens": "probes",
    "attention": "probes", "models": "models", "lora": "lora", "plugins": "plugins", "presets": "presets",
    "bench": "bench", "chat": "chat", "history": "chat",
}  # fmt: skip  (tour runs the chat command through click: it registers everything)
_ORDER = ("generate", "serve", "inspect", "probes", "models", "lora", "plugins", "presets", "bench", "chat", "tour")


def _register_module(name: str) -> None:
    """Put the commands of one command module on ``app`` (chat and tour: only where the chat front end imports)."""
    import importlib

    try:
        module = importlib.import_module("chatcli.bench.cli" if name == "bench" else f"chatcli.cli.{name}")
    except ImportError:
        if name in ("chat", "tour"):  # the chat front end, and the tour that runs in it, land in their own modules
            return
        raise
    module.register(app)
    _registered.add(name)


def _register_commands(only: str | None = None) -> None:
    """Put the core commands on ``app``: all of them, in help order, or only those of the module
    that registers the command word ``only`` (see ``_MODULE_OF``)."""
    if only is not None:
        if _MODULE_OF[only] not in _registered:
            _register_module(_MODULE_OF[only])
        return
    if _registered == set(_ORDER):
        return
    # None or only some so far (a command registered alone): again from the start, so help lists them in order.
    app.registered_commands.clear()
    app.registered_groups.clear()
    _registered.clear()
    for name in _ORDER:
        _register_module(name)


def _command_word(args: list[str]) -> str | None:
    """The core command ``args`` run (their first word that is no option), or None: a help, a Tab,
    a plugin's command or a typo, for which every core command is registered."""
    from chatcli.cli import completion

    if completion.completing():
        return None
    first = next((a for a in args if not a.startswith("-")), None)
    return first if first in _MODULE_OF else None


def fail(message: str, code: int) -> None:
    """Print one error line and exit; the single exit path for every error."""
    sys.stderr.write(f"chatcli: error: {message}\n")
    sys.stderr.flush()
    sys.exit(code)


def _usage_message(e) -> str:
    msg = e.format_message().strip().replace("\n", " ")
    ctx = e.ctx
    where = ctx.command_path if ctx is not None else "chatcli"
    return f"{msg} (see '{where} --help')"


def _run(command, args: list[str]):
    """Run the command line: completion requests, plugin commands, help conventions, [defaults]."""
    from chatcli.cli import completion
    from chatcli.cli import plugins as cli_plugins
    from chatcli.cli.help_format import polish
    from chatcli.cli.option_layers import read_plain_values

    if args[:1] and args[0] in completion.FLAGS and len(args) <= 2:
        completion.run_flag(args[0], args[1] if len(args) == 2 else None)
        return 0
    tab = completion.completing()
    cli_plugins.attach(command, completion.typed_words() if tab else args)  # plugin sub-commands; none for core ones
    polish(command)
    read_plain_values(command)  # the usual option values typed without pydantic (6-8 MB, issue 18)
    if tab:
        completion.prepare()
    return command.main(args=args, prog_name="chatcli", standalone_mode=False,
                        default_map=_default_map(command, args, quiet=tab))


def _default_map(command, args: list[str], *, quiet: bool) -> dict | None:
    """typer's default_map from the config file's [defaults].

    A broken config file fails a command that takes [defaults] (one line, nothing run),
    not one that takes none (``history list``, ``plugins list``: that one warns), a
    ``--help`` or a shell's Tab.
    """
    from chatcli.cli.option_layers import default_map, keyed_params, label_config_defaults, target
    from chatcli.settings.config_file import ConfigError, ConfigUnreadable, read_defaults

    try:
        defaults = read_defaults()
    except (ConfigError, ConfigUnreadable):
        runs = target(command, args)
        if quiet or "--help" in args or "-h" in args or runs is None or not keyed_params(runs):
            return None
        raise
    label_config_defaults(command, defaults)
    return default_map(command, defaults) or None


def main(argv: list[str] | None = None) -> None:
    global _debug
    args = list(sys.argv[1:] if argv is None else argv)
    _debug = "--debug" in args or os.environ.get("CHATCLI_DEBUG") == "1"
    _register_commands(_command_word(args))
    command = typer.main.get_command(app)
    try:
        rc = _run(command, args)
    except _NoArgsHelp:  # `chatcli models` alone: typer has printed its help already
        sys.exit(0)
    except _UsageErrors as e:
        if _debug:
            raise
        fail(_usage_message(e), 2)
    except ChatcliError as e:
        if _debug:
            raise
        fail(e.message, e.exit_code)
    except _Aborts:
        sys.stderr.write("chatcli: interrupted\n")
        sys.exit(130)
    except _ClickErrors as e:
        fail(e.format_message().replace("\n", " "), e.exit_code)
    except BrokenPipeError:
        # Reader went away (e.g. `| head`): not an error worth a traceback.
        os._exit(0)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
