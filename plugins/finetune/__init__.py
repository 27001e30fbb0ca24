"""The ``finetune`` plugin: LoRA SFT, DPO, reward models and RL from chats, rankings and graders.

Adds the ``chatcli finetune sft|dpo|reward|rl`` CLI group and the ``/finetune`` chat command
(background runs, status, stop, hot-load, an RL run's groups), ``/score`` (rewards of the
conversation's answers by a loaded reward model) and ``/best N`` (N answers, graded, the
best kept). This module only registers
it; torch and the training code are imported when a command runs.
"""

from __future__ import annotations

from chatcli.plugins.hookspecs import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_cli(register):
    register("finetune", "chatcli_finetune.cli:finetune_app", "Train LoRA adapters: sft, dpo, reward (PEFT format).")


def _finetune_command(ctx, args: str | None = None) -> None:
    from chatcli_finetune.command import finetune_command

    finetune_command(ctx, args or "")


def _best_command(ctx, args: str | None = None) -> None:
    from chatcli_finetune.rl.best import best_command

    best_command(ctx, args or "")


def _score_command(ctx, args: str | None = None) -> None:
    from chatcli_finetune.score_command import score_command

    score_command(ctx, args or "")


@hookimpl
def register_commands(register):
    from chatcli.chat.commands import Arg

    register(
        "finetune",
        _finetune_command,
        "train a LoRA adapter in the background: /finetune sft|dpo|reward|rl [FILE] [--load] [flags] | status | stop | load | plot | groups",
        args=(Arg("args", "text", optional=True, help="sft|dpo|reward|rl [FILE] [--load] [flags], status, stop, load, plot [DIR], groups [DIR]"),),
    )
    register(
        "best",
        _best_command,
        "answer N times, grade the answers and keep the best: /best [N] [--reward DIR|rule:...|NAME]",
        args=(Arg("args", "text", optional=True, help="N (2-10), --reward DIR|rule:max-words=N|rule:contains=WORD|rule:regex=P|NAME"),),
        idle_only=True,
    )
    register(
        "score",
        _score_command,
        "rewards of this conversation's answers by a loaded reward model: /score [NAME] | /score load DIR",
        args=(Arg("args", "text", optional=True, help="NAME of a loaded reward model, or load DIR [NAME]"),),
        idle_only=True,
    )


def _plot_screen(ctx):
    from chatcli_finetune.command import plot_screen

    return plot_screen(ctx)


@hookimpl
def register_tui(register):
    register("finetune-plot", _plot_screen, kind="screen", title="Fine-tuning curves (live)")


@hookimpl
def status_item():
    from chatcli_finetune.command import status_item as item

    return item()
