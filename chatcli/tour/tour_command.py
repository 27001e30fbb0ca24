"""``/tour [next|back|N|list|off]`` in the chat, for the TUI and the plain REPL alike.

:func:`install` adds the command to a front end's registry, bound to that chat's
:class:`~chatcli.tour.guide.Tour`, and makes the tour watch every command that runs
(:meth:`chatcli.chat.commands.Registry.observe`). ``/tour`` alone starts the tour
where the learner left it (or shows the open chapter again); ``next`` needs the
chapter's goals met, ``N`` goes anywhere; ``off`` hides it, keeping the progress.

:func:`line_front_end_idle` is what a line-based front end (the plain REPL) runs before
reading each line: the open chapter at start, then the tour's notes (goals met, a chapter
done, a progress file that could not be read or written) where they cannot cut into an
answer being printed.
"""

from __future__ import annotations

from collections.abc import Callable

from chatcli.chat.commands import Arg, Command, CommandContext, Registry
from chatcli.errors import UsageError
from chatcli.tour.guide import Tour
from chatcli.tour.render import chapter_text, chapters_table

USAGE = "/tour [next|back|N|list|off]"


def install(registry: Registry, tour: Tour) -> None:
    """Add ``/tour`` for ``tour`` to ``registry`` and let the tour observe the commands run through it."""

    def run(ctx: CommandContext, what: str | None = None) -> None:
        tour_command(ctx, tour, what)

    registry.add(Command("tour", run, f"the guided tour, one live experiment per chapter: {USAGE}",
                         (Arg("what", optional=True, help="next, back, a chapter number, list or off"),)))  # fmt: skip
    registry.observe(tour.command_ran)


def tour_command(ctx: CommandContext, tour: Tour, what: str | None) -> None:
    word = (what or "").strip().lower()
    if word in ("", "show", "on", "start"):
        tour.start()
    elif word == "next":
        tour.next()
    elif word in ("back", "prev", "previous"):
        tour.back()
    elif word.isdigit():
        tour.start(int(word))
    elif word in ("list", "ls"):
        ctx.say(chapters_table(tour.view(), tour.chapters), "result")
        return
    elif word in ("off", "stop", "hide"):
        tour.stop()
        ctx.say(f"tour off; /tour resumes it at chapter {tour.chapter.number}", "info")
        return
    else:
        raise UsageError(f"unknown /tour {what!r}; usage: {USAGE}")
    ctx.say(chapter_text(tour.view()), "result")


def say_notes(ctx: CommandContext, tour: Tour) -> None:
    for note in tour.take_notes():
        ctx.say(note.text, "warning" if note.kind == "warning" else "info")


def line_front_end_idle(tour: Tour) -> Callable[[CommandContext], None]:
    """``idle(ctx)`` for the plain REPL: at the first call the open chapter (when the tour is on), then notes."""
    greeted = False

    def idle(ctx: CommandContext) -> None:
        nonlocal greeted
        first, greeted = not greeted, True
        if not tour.active:  # notes wait for /tour (a broken progress file is said when the tour starts)
            return
        if first:  # `chatcli tour`: the chapter it opened (a /tour later says its own)
            ctx.say(chapter_text(tour.view()), "result")
        say_notes(ctx, tour)

    return idle
