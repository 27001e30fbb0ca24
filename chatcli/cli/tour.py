"""``chatcli tour [--list] [--chapter N] [--reset] [CHAT OPTIONS]``: the chat, with the guided tour on.

The tour (:mod:`chatcli.tour`) is nine chapters, each a live experiment on the model in
the real chat; progress is kept in the user data dir, so ``chatcli tour`` resumes where
the learner left off (``--chapter N`` opens another chapter, ``--reset`` starts over).
``--list`` prints the chapters with ✓ for the done ones and opens nothing.

Everything else on the line goes to ``chatcli chat`` (``--plain``, ``--model``, ...):
the chat command runs as a sub-command of this one and finds the started tour in the
click context's ``meta`` (:data:`TOUR_KEY`), where ``chatcli chat`` alone finds none and
builds one that stays off until ``/tour``.
"""

from __future__ import annotations

import typer

from chatcli.errors import UsageError

TOUR_KEY = "chatcli.tour"  # ctx.meta key: the Tour a chat opened by `chatcli tour` uses


def tour(
    ctx: typer.Context,
    list_: bool = typer.Option(False, "--list", "-l", help="List the chapters (✓ = done) and exit."),
    chapter: int | None = typer.Option(None, "--chapter", "-c", help="Open chapter N (default: where you left off)."),
    reset: bool = typer.Option(False, "--reset", help="Forget the tour's progress and start at chapter 1."),
) -> None:
    """A guided tour of how a chat model works, one live experiment per chapter (other options go to `chatcli chat`)."""
    from chatcli.tour.guide import user_tour

    guide = user_tour()
    if chapter is not None and not 1 <= chapter <= len(guide.chapters):
        raise UsageError(f"no chapter {chapter}: the tour has chapters 1 to {len(guide.chapters)}")
    if reset:
        guide.reset()
    if list_:
        _print_list(guide)
        return
    guide.start(chapter)
    root = ctx.find_root()
    chat = root.command.get_command(root, "chat")
    ctx.meta[TOUR_KEY] = guide
    with chat.make_context("chat", list(ctx.args), parent=ctx) as sub:
        chat.invoke(sub)


def _print_list(guide) -> None:
    import sys

    from rich.console import Console

    from chatcli.tour.render import chapters_table

    for note in guide.take_notes():  # a broken progress file
        sys.stderr.write(f"chatcli: warning: {note.text}\n")
    view = guide.view()
    console = Console(highlight=False)
    console.print(chapters_table(view, guide.chapters))
    console.print(f"{len(view.done)} of {view.total} chapters done; `chatcli tour` opens chapter {view.chapter.number}",
                  markup=False)  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("tour", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(tour)
