"""The chat TUI's streaming state as a plain object: one answer at a time, paced to the screen.

:class:`StreamController` imports nothing from Textual; the app hands it callbacks
at construction, so it is tested with threads and lists alone. It owns:

* the running generation: ``start(job)`` asks ``spawn`` to run a body in a thread
  (the app passes a Textual thread worker; tests a ``threading.Thread``) and keeps
  the handle ``spawn`` returns (:attr:`handle`, awaited on quit);
* the cancel event (Esc, Ctrl+C, quit, SIGHUP): the engine ends with
  ``Done("cancelled")`` and the partial answer stays; a stream that ends with no
  ``Done`` at all is reported as cancelled too;
* the pacing: the worker only appends to the conversation (``run`` is
  :meth:`chatcli.chat.core.ChatCore.run`) and calls ``on_tick`` when no tick is
  pending; the UI thread takes every new step at once (:meth:`flush`), renders
  them, then calls :meth:`rendered`, which waits an adaptive interval
  (``flush_interval`` at least, longer while the UI thread is busy) before the next
  tick. A fast model never floods the UI's queue; a slow UI sees bigger batches;
* the answer in progress: its job, how many of its steps are on screen, whether the
  panel follows the live step, and the actions queued to run once it has ended
  (:meth:`stop_then`: branching while an answer streams stops it first).

Threads: ``run`` iterates in the worker; ``on_tick``, ``on_notice`` and ``on_done``
are called from the worker and must be thread-safe (the app posts a message);
every other method runs on the UI thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from chatcli.chat.core import Job
from chatcli.engine.events import Done, Event, Notice, Step

RunFn = Callable[[Job, threading.Event], Iterable[Event]]
Action = Callable[[], Any]


class StreamController:
    """One streaming answer at a time, its cancel event and the pace of its updates to the UI."""

    def __init__(
        self,
        run: RunFn,
        *,
        spawn: Callable[[Callable[[], None]], Any],
        on_tick: Callable[[int], None],
        on_notice: Callable[[str, str], None],
        on_done: Callable[[int, Done], None],
        schedule: Callable[[float, Callable[[], None]], Any],
        flush_interval: float = 0.05,
        cpu_clock: Callable[[], float] = time.thread_time,
        wall_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``run(job, cancel)`` yields the answer's events; ``spawn(body)`` runs ``body`` in a
        thread and returns a handle; ``on_tick(node_id)``: new steps are in (call
        :meth:`flush`); ``on_notice(text, kind)``: the engine's notice; ``on_done(node_id,
        done)``: the worker has ended (call :meth:`finish`); ``schedule(delay, callback)``
        calls back on the UI thread. The clocks measure the UI thread's CPU share."""
        self._run = run
        self._spawn = spawn
        self._on_tick = on_tick
        self._on_notice = on_notice
        self._on_done = on_done
        self._schedule = schedule
        self.flush_interval = flush_interval
        self._cpu_clock = cpu_clock
        self._wall_clock = wall_clock
        self._job: Job | None = None
        self._cancel: threading.Event | None = None
        self._finished: threading.Event | None = None  # set once the worker has saved the answer
        self._handle: Any = None
        self._after: list[Action] = []
        self._lock = threading.Lock()  # guards _tick_pending, which both threads set
        self._tick_pending = False  # a tick is posted and the UI has not finished with it
        self._flushed = 0  # steps of the answer already on screen
        self._interval = flush_interval  # the current pause between UI updates (adaptive)
        self._ui_clock = (0.0, 0.0)  # (UI thread CPU time, wall time) at the last update
        self.following = True  # the panel shows the live step (until a token is selected)

    # --- state -----------------------------------------------------------------------------

    @property
    def streaming(self) -> bool:
        """An answer was started and its end has not been handled yet (:meth:`finish`)."""
        return self._job is not None

    @property
    def job(self) -> Job | None:
        return self._job

    @property
    def handle(self) -> Any:
        """What ``spawn`` returned for the running answer (None when none runs)."""
        return self._handle

    @property
    def stopping(self) -> bool:
        """The running answer was asked to stop and has not ended yet."""
        return self._cancel is not None and self._cancel.is_set()

    @property
    def flushed(self) -> int:
        """Steps of the streaming answer the UI has taken so far."""
        return self._flushed

    # --- starting and stopping -------------------------------------------------------------

    def start(self, job: Job) -> bool:
        """Stream ``job`` in a thread; False (and nothing runs) while another answer streams."""
        if self._job is not None:
            return False
        cancel, finished = threading.Event(), threading.Event()
        self._job, self._cancel, self._finished = job, cancel, finished
        self.following = True
        self._flushed = len(job.node.steps)
        with self._lock:
            self._tick_pending = False
        self._interval = self.flush_interval
        self._ui_clock = (self._cpu_clock(), self._wall_clock())
        self._handle = self._spawn(lambda: self._work(job, cancel, finished))
        return True

    def cancel(self) -> bool:
        """Ask the running answer to stop; False when none runs."""
        if self._cancel is None:
            return False
        self._cancel.set()
        return True

    def stop_then(self, action: Action) -> None:
        """Stop the running answer and run ``action`` once its end is handled (see :meth:`finish`)."""
        self._after.append(action)
        self.cancel()

    def shutdown(self, timeout: float) -> None:
        """Stop the running answer and wait up to ``timeout`` s for its worker to save it (SIGHUP)."""
        finished = self._finished
        if self.cancel() and finished is not None:
            finished.wait(timeout)

    def finish(self) -> list[Action]:
        """The UI has the worker's ``on_done``: forget the answer; returns the actions queued for now."""
        self._job = self._cancel = self._handle = None
        pending, self._after = self._after, []
        return pending

    # --- the worker ------------------------------------------------------------------------

    def _work(self, job: Job, cancel: threading.Event, finished: threading.Event) -> None:
        done: Done | None = None
        try:
            for event in self._run(job, cancel):
                if isinstance(event, Step):
                    self._request_tick(job.node.id)
                elif isinstance(event, Notice):
                    self._on_notice(event.message, event.kind)
                elif isinstance(event, Done):
                    done = event
        except Exception as e:  # an engine bug: report it, keep the app and the conversation alive
            job.node.status = "error"
            job.node.meta["error"] = f"{type(e).__name__}: {e}"
            done = Done("error", 0, len(job.node.steps), None, None, error=job.node.meta["error"])
        finally:
            finished.set()  # the answer is saved (ChatCore.run persists on the way out)
        self._on_done(job.node.id, done or Done("cancelled", 0, len(job.node.steps), None, None))

    def _request_tick(self, node_id: int) -> None:
        with self._lock:  # one tick in flight at most: the UI takes all new steps at once
            if self._tick_pending:
                return
            self._tick_pending = True
        self._on_tick(node_id)

    # --- pacing (UI thread) ----------------------------------------------------------------

    def flush(self) -> int | None:
        """On a tick: how many steps the answer has now (all go to the screen); None when none streams."""
        job = self._job
        if job is None:
            return None
        self._flushed = len(job.node.steps)
        return self._flushed

    def rendered(self) -> None:
        """The UI has shown what :meth:`flush` gave it: the next tick comes after the interval."""
        self._schedule(self.next_interval(), self._tick_done)

    def next_interval(self) -> float:
        """The pause before the next UI update: ``flush_interval``, longer while the UI thread is busy.

        Layout and rendering of a long answer cost more with every token; the UI
        thread also competes with the engine for the GIL. Keeping the UI thread's
        CPU share under ~30% keeps both the model and the keyboard fast.
        """
        cpu, wall = self._cpu_clock(), self._wall_clock()
        last_cpu, last_wall = self._ui_clock
        self._ui_clock = (cpu, wall)
        if wall > last_wall:
            share = (cpu - last_cpu) / (wall - last_wall)
            if share > 0.3:
                self._interval = min(1.0, self._interval * 1.5)
            elif share < 0.15:
                self._interval = max(self.flush_interval, self._interval / 1.25)
        return self._interval

    def _tick_done(self) -> None:
        job = self._job
        with self._lock:
            self._tick_pending = False
            if job is None or len(job.node.steps) <= self._flushed:
                return
            self._tick_pending = True  # steps came meanwhile: they go out now
        self._on_tick(job.node.id)

    # --- what the panel follows ------------------------------------------------------------

    def token_selected(self, node_id: int, index: int) -> bool:
        """A token got the cursor: the panel follows the live step only if it is the streaming
        answer's newest one. Returns whether it follows."""
        job = self._job
        self.following = job is not None and job.node.id == node_id and index >= len(job.node.steps) - 1
        return self.following

    def follow(self) -> None:
        """Inspection ended (the prompt has the focus): the panel follows the live step again."""
        if self._job is not None:
            self.following = True
