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


_registered = False


def _register_commands() -> None:
    global _registered
    if _registered:  # main() may run many times in one process (tests, embedding)
        return
    _registered = True
    from chatcli.cli import generate as cli_generate
    from chatcli.cli import inspect as cli_inspect
    from chatcli.cli import lora as cli_lora
    from chatcli.cli import models as cli_models
    from chatcli.cli import plugins as cli_plugins
    from chatcli.cli import probes as cli_probes
    from chatcli.cli import serve as cli_serve

    cli_generate.register(app)
    cli_serve.register(app)
    cli_inspect.register(app)
    cli_probes.register(app)
    cli_models.register(app)
    cli_lora.register(app)
    cli_plugins.register(app)
    from chatcli.cli import presets as cli_presets

    cli_presets.register(app)
    from chatcli.bench import cli as cli_bench

    cli_bench.register(app)
    try:  # the chat front end lands in its own module
        from chatcli.cli import chat as cli_chat
    except ImportError:
        return
    cli_chat.register(app)
    from chatcli.cli import tour as cli_tour

    cli_tour.register(app)


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

    if args[:1] and args[0] in completion.FLAGS and len(args) <= 2:
        completion.run_flag(args[0], args[1] if len(args) == 2 else None)
        return 0
    tab = completion.completing()
    cli_plugins.attach(command, completion.typed_words() if tab else args)  # plugin sub-commands; none for core ones
    polish(command)
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
    _register_commands()
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
