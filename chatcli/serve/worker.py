"""The one engine thread: a FIFO queue of jobs, results handed back to asyncio.

The engine is not re-entrant (one stream at a time, and adapter loads must not land
mid-answer), so every use of it — generations, adapter loads and unloads — is a job
run in order on one worker thread. A job's items travel to the request's coroutine
through an :class:`asyncio.Queue` (``call_soon_threadsafe``), so the event loop never
blocks on the model. Each job carries its request's ``cancel`` event: a job cancelled
while it waits is skipped, and a running generation checks it before every forward
(the route sets it when the client disconnects).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("chatcli.serve")

_END = object()  # the job has nothing more to give


@dataclass
class _Failure:
    error: BaseException


@dataclass
class _Job:
    work: Callable[[], Iterator[Any]]
    cancel: threading.Event
    put: Callable[[Any], None]


class EngineWorker:
    """Runs jobs one at a time, in arrival order, on a daemon thread."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="chatcli-serve-engine", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Jobs queued behind the running one (approximate)."""
        return self._jobs.qsize()

    def stream(self, work: Callable[[], Iterator[T]], cancel: threading.Event) -> AsyncIterator[T]:
        """Queue ``work`` (called on the worker thread) and iterate what it yields, in order.
        An exception it raises is re-raised here, after the items before it."""
        loop = asyncio.get_running_loop()
        out: asyncio.Queue = asyncio.Queue()

        def put(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(out.put_nowait, item)
            except RuntimeError:  # the event loop is gone (server shutting down): nobody listens
                cancel.set()

        self._jobs.put(_Job(work, cancel, put))
        return self._drain(out)

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the worker thread, after the jobs queued before it; return its result."""
        results = [item async for item in self.stream(lambda: iter([fn()]), threading.Event())]
        return results[0]

    @staticmethod
    async def _drain(out: asyncio.Queue) -> AsyncIterator[Any]:
        while True:
            item = await out.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                if not job.cancel.is_set():  # its client left while it waited
                    for item in job.work():
                        job.put(item)
            except Exception as e:  # handed to the request; the worker goes on with the next job
                job.put(_Failure(e))
            finally:
                job.put(_END)

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop after the queued jobs (set their cancel events first to drop them)."""
        self._jobs.put(None)
        self._thread.join(timeout)
