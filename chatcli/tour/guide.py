"""The tour's state machine: which chapter is open, which goals are met, and what the learner is told.

A front end holds one :class:`Tour` per chat and feeds it events (see
:mod:`chatcli.tour.checks`): :meth:`Tour.listener` is a chat-core listener,
:meth:`Tour.command_ran` a command-registry observer, :meth:`Tour.saw_step` and
:meth:`Tour.opened_view` are called by the front end. Events arrive on any thread
(answers finish in a worker), so the state sits behind a lock; every change is saved
(:mod:`chatcli.tour.progress_file`) and announced to the subscribers
(:meth:`Tour.subscribe`), which must be quick and thread-safe (the TUI posts a
message). What the learner should read about a change (a goal met, a chapter done,
a save that failed) waits in :meth:`Tour.take_notes` for the front end to show
where it fits.

While the tour is off (:meth:`Tour.stop`, or never started) events are ignored.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatcli.errors import UsageError
from chatcli.tour.chapters import CHAPTERS, Chapter
from chatcli.tour.checks import ADAPTER, ANSWER, COMMAND, MESSAGE, STEP, VIEW, TourEvent
from chatcli.tour.progress_file import TourProgress, default_path, load_progress, save_progress


@dataclass(frozen=True)
class Note:
    text: str
    kind: str = "goal"  # "goal" (one goal met) | "done" (the chapter) | "warning" (the progress file)


@dataclass(frozen=True)
class TourView:
    """A consistent snapshot for rendering (the card, /tour, --list)."""

    active: bool
    chapter: Chapter
    total: int
    met: frozenset[str]
    done: frozenset[int]

    @property
    def chapter_done(self) -> bool:
        return self.chapter.number in self.done


class Tour:
    def __init__(self, path: Path | None, chapters: Sequence[Chapter] = CHAPTERS, *, sees_answers: bool = False) -> None:
        """``path``: the progress file (None: kept in memory only). ``sees_answers``: the front end
        shows every token's certainty as it prints (the plain chat), so the surest and least sure
        steps of each answer count as seen; the TUI instead reports the tokens the learner selects."""
        self.path = path
        self.chapters = tuple(chapters)
        self.sees_answers = sees_answers
        self.active = False
        self._lock = threading.RLock()
        self._notes: list[Note] = []
        self._subscribers: list[Callable[[], None]] = []
        self._save_failed = False
        if path is not None:
            self.progress, warning = load_progress(path, len(self.chapters))
            if warning:
                self._notes.append(Note(warning, "warning"))
        else:
            self.progress = TourProgress()

    # --- reading ----------------------------------------------------------------------------

    @property
    def chapter(self) -> Chapter:
        return self.chapters[self.progress.current - 1]

    def view(self) -> TourView:
        with self._lock:
            n = self.progress.current
            return TourView(self.active, self.chapter, len(self.chapters), frozenset(self.progress.met.get(n, ())),
                            frozenset(self.progress.done))  # fmt: skip

    def take_notes(self) -> list[Note]:
        with self._lock:
            notes, self._notes = self._notes, []
        return notes

    def subscribe(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` after every change (from the thread that made it)."""
        self._subscribers.append(fn)

    # --- moving -----------------------------------------------------------------------------

    def start(self, number: int | None = None) -> Chapter:
        """Switch the tour on at chapter ``number``, or where the learner left it."""
        with self._lock:
            if number is not None:
                self._check_number(number)
                self.progress.current = number
            self.active = True
            self._save()
        self._changed()
        return self.chapter

    def stop(self) -> None:
        with self._lock:
            self.active = False
        self._changed()

    def next(self) -> Chapter:
        """The next chapter, once this one is done (``/tour N`` skips ahead on purpose)."""
        with self._lock:
            n = self.progress.current
            if n >= len(self.chapters):
                raise UsageError(f"chapter {n} is the last one; /tour list shows them all")
            if n not in self.progress.done:
                left = [g.label for g in self.chapter.goals if g.key not in self.progress.met.get(n, set())]
                raise UsageError(f"chapter {n} is not done yet (still: {'; '.join(left)}); "
                                 f"do it, or skip ahead with /tour {n + 1}")  # fmt: skip
        return self.start(n + 1)

    def back(self) -> Chapter:
        with self._lock:
            n = self.progress.current
        if n <= 1:
            raise UsageError("this is the first chapter")
        return self.start(n - 1)

    def reset(self) -> None:
        """Forget all progress (the file too; a warning about the old file no longer matters)."""
        with self._lock:
            self.progress = TourProgress()
            self._notes = [n for n in self._notes if n.kind != "warning"]
            self._save()
        self._changed()

    def _check_number(self, number: int) -> None:
        if not 1 <= number <= len(self.chapters):
            raise UsageError(f"no chapter {number}: the tour has chapters 1 to {len(self.chapters)}")

    # --- observing --------------------------------------------------------------------------

    def observe(self, event: TourEvent) -> None:
        """Check the open chapter's goals against ``event``; save and announce what it met."""
        if not self.active:
            return
        with self._lock:
            chapter = self.chapter
            met = self.progress.met.setdefault(chapter.number, set())
            before = set(met)
            for goal in chapter.goals:
                if goal.key in met or (goal.after is not None and goal.after not in before):
                    continue
                if goal.test(event):
                    met.add(goal.key)
                    self._notes.append(Note(f"tour ✓ {goal.label}"))
            if met == before:
                if not met:
                    del self.progress.met[chapter.number]
                return
            if all(g.key in met for g in chapter.goals) and chapter.number not in self.progress.done:
                self.progress.done.add(chapter.number)
                after = (f"/tour next opens chapter {chapter.number + 1}" if chapter.number < len(self.chapters)
                         else "That was the last chapter; /tour list shows them all.")  # fmt: skip
                self._notes.append(Note(f"tour ✓ chapter {chapter.number} done: {chapter.title}. {after}", "done"))
            self._save()
        self._changed()

    def listener(self, event: str, **fields: Any) -> None:
        """A :data:`chatcli.chat.core.Listener`: the chat core's events, with the plugin hooks' fields."""
        if not self.active or event == "step_generated":  # per token: nothing to check
            return
        if event == "message_added":
            message = fields.get("message")
            if message is not None and message.role == "user":
                self.observe(TourEvent(MESSAGE, text=message.content))
        elif event == "answer_finished":
            message, done, conversation = fields.get("message"), fields.get("done"), fields.get("conversation")
            turns = sum(1 for node in conversation.path() if node.role == "user") if conversation is not None else 0
            finish = getattr(done, "finish_reason", "")
            self.observe(TourEvent(ANSWER, user_turns=turns, finish=finish))
            if self.sees_answers and message is not None and finish != "error":
                known = [s for s in message.steps if s.entropy == s.entropy]  # NaN: a server did not say
                if known:
                    self.saw_step(min(known, key=lambda s: s.entropy))
                    self.saw_step(max(known, key=lambda s: s.entropy))
        elif event == "adapter_loaded":
            self.observe(TourEvent(ADAPTER, name=str(fields.get("name") or "")))

    def command_ran(self, name: str, args: dict[str, Any]) -> None:
        """A :meth:`chatcli.chat.commands.Registry.observe` observer: ``/name`` ran without error."""
        if name == "tour":
            return
        words = " ".join(str(v) for v in args.values() if v is not None)
        self.observe(TourEvent(COMMAND, name=name, args=words))

    def saw_step(self, step: Any) -> None:
        """The learner looked at ``step`` (a :class:`chatcli.engine.events.Step`)."""
        entropy = getattr(step, "entropy", float("nan"))
        if entropy == entropy:
            self.observe(TourEvent(STEP, entropy=float(entropy)))

    def opened_view(self, name: str) -> None:
        """The front end opened a view of a step ("what-if", "lens", "attention", ...)."""
        self.observe(TourEvent(VIEW, name=name))

    # --- saving and announcing --------------------------------------------------------------

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            save_progress(self.progress, self.path)
        except OSError as e:
            if not self._save_failed:  # one line, not one per event
                self._save_failed = True
                self._notes.append(Note(f"the tour's progress could not be saved to {self.path} ({e.strerror or e}); "
                                        "it is kept for this session", "warning"))  # fmt: skip

    def _changed(self) -> None:
        for fn in list(self._subscribers):
            fn()


def user_tour() -> Tour:
    """The tour kept in the user data dir; when that folder cannot be made, one kept for this session
    only, with one warning (a chat must open all the same)."""
    try:
        path = default_path()
    except OSError as e:
        tour = Tour(None)
        tour._notes.append(Note(f"the tour's progress cannot be kept (no data folder: {e.strerror or e}); "
                                "it lasts this session", "warning"))  # fmt: skip
        return tour
    return Tour(path)
