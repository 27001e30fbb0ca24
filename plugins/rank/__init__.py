"""The ``rank`` plugin: rank several answers to one question and keep the result as preference data.

Adds the ``/rank [N] [--temperature T] [--lora-mix] [--no-existing]`` slash command, the
``chatcli rank`` CLI group (generate, annotate, export, stats) and the ranking
screen. This module only registers them; everything heavy (torch, textual,
SQLite) is imported when a command runs.
"""

from __future__ import annotations

from chatcli.plugins.hookspecs import hookimpl

__version__ = "0.1.0"


def _rank_command(ctx, args: str | None = None) -> None:
    from chatcli_rank.command import rank_command

    rank_command(ctx, args or "")


@hookimpl
def register_commands(register):
    from chatcli.chat.commands import Arg

    register(
        "rank",
        _rank_command,
        "rank N answers to the last message (default 4; the existing reply is one of them unless --no-existing): "
        "/rank [N] [--temperature T] [--lora-mix] [--no-existing]",
        args=(Arg("args", "text", optional=True, help="N, --temperature T, --lora-mix, --no-existing"),),
        idle_only=True,
    )


@hookimpl
def register_cli(register):
    register("rank", "chatcli_rank.cli:rank_app", "Rank answers as preference data: generate, annotate, export, stats.")


def _screen_factory(ctx):
    from chatcli_rank.command import build_screen

    return build_screen(ctx)


@hookimpl
def register_tui(register):
    register("rank", _screen_factory, kind="screen", title="Rank candidate answers")
