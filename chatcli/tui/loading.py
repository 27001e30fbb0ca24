"""Loading the model off the UI thread: :func:`load_engine` is the body of the app's load worker.

It calls ``engine_factory(progress)`` and reports through ``post`` (the app's
thread-safe ``post_message``): :class:`LoadProgress` at most every 50 ms (and at the
end of each stage), then :class:`EngineLoaded` or :class:`EngineFailed` with the
one-line message. A loader's bug is reported the same way and never takes the app down.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from textual.message import Message

from chatcli.chat.core import EngineFactory
from chatcli.errors import ChatcliError
from chatcli.tui.messages import EngineFailed, EngineLoaded, LoadProgress

PROGRESS_EVERY_S = 0.05


def load_engine(engine_factory: EngineFactory, post: Callable[[Message], object]) -> None:
    """Load the engine (runs in a worker thread); the outcome arrives as a message."""
    last = [0.0]

    def progress(stage: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S or (total is not None and done >= total):
            last[0] = now
            post(LoadProgress(stage, done, total))

    try:
        engine = engine_factory(progress)
    except ChatcliError as e:
        post(EngineFailed(e.message))
        return
    except Exception as e:  # a bug in a loader must not take the app down
        post(EngineFailed(f"{type(e).__name__}: {e}"))
        return
    post(EngineLoaded(engine))
