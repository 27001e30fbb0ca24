"""The tour as text: a chapter in full, the compact card, the list of chapters (Rich renderables).

Shared by every front end: the TUI docks :func:`card_text` above the prompt and puts
:func:`chapter_text` in the transcript, the plain chat prints the chapter, ``chatcli
tour --list`` prints :func:`chapters_table`. Text between backticks in a chapter's
steps is what the learner types; it is shown in the command colour.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from chatcli.tour.chapters import Chapter
from chatcli.tour.guide import TourView

DONE, OPEN = "✓", "○"
TYPED = "bold cyan"


def typed_text(line: str) -> Text:
    """``line`` with its `backticked` parts styled as typed commands (the backticks stay: without
    colour they still show where what to type begins and ends)."""
    text = Text()
    for k, part in enumerate(line.split("`")):
        text.append(f"`{part}`" if k % 2 else part, style=TYPED if k % 2 else "")
    return text


def goal_marks(chapter: Chapter, met: frozenset[str]) -> Text:
    text = Text()
    for k, goal in enumerate(chapter.goals):
        if k:
            text.append("  ")
        ok = goal.key in met
        text.append(f"{DONE if ok else OPEN} ", style="bold green" if ok else "dim")
        text.append(goal.label, style="green" if ok else "")
    return text


def chapter_text(view: TourView) -> Text:
    """The whole chapter: its idea, what to try, the goals so far, and how to move on."""
    ch = view.chapter
    text = Text.assemble((f"Tour {ch.number}/{view.total} · {ch.title}", "bold"), "\n")
    for line in ch.explain:
        text.append_text(Text(line + "\n"))
    text.append("Try:\n", style="bold")
    for line in ch.steps:
        text.append("  • ")
        text.append_text(typed_text(line))
        text.append("\n")
    text.append_text(goal_marks(ch, view.met))
    text.append("\n")
    text.append_text(typed_text(_moves(view)))
    return text


def _moves(view: TourView) -> str:
    n = view.chapter.number
    step = "`/tour next` when every goal has its ✓" if n < view.total else "the last chapter"
    if view.chapter_done and n < view.total:
        step = "done: `/tour next`"
    return f"{step} · `/tour back` · `/tour list` · `/tour off` hides the tour"


def card_text(view: TourView) -> Text:
    """Two lines for the docked card: the chapter, then its goals (or what to do next)."""
    ch = view.chapter
    head = Text(f"Tour {ch.number}/{view.total} · {ch.title}", style="bold")
    if view.chapter_done:
        head.append("  ✓ done", style="bold green")
        head.append(" · ")
        head.append("/tour next" if ch.number < view.total else "/tour list", style=TYPED)
    else:
        head.append("  /tour", style=TYPED)
        head.append(" shows the chapter", style="dim")
    return Text.assemble(head, "\n", goal_marks(ch, view.met))


def chapters_table(view: TourView, chapters: tuple[Chapter, ...]) -> Table:
    """Every chapter with ✓ when done and ▸ on the current one."""
    table = Table(box=None, show_header=False, padding=(0, 1, 0, 0), pad_edge=False)
    table.add_column(justify="right")
    table.add_column()
    table.add_column()
    for ch in chapters:
        mark = Text(DONE, style="bold green") if ch.number in view.done else Text(" ")
        here = ch.number == view.chapter.number
        table.add_row(Text(("▸ " if here else "  ") + str(ch.number), style="bold" if here else ""), mark,
                      Text(ch.title, style="bold" if here else ""))  # fmt: skip
    return table
