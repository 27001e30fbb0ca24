"""What a closing terminal does to the chat: SIGHUP stops the answer, waits for its save, and leaves.

There is no screen left to shut down gracefully (Textual's writer can block on the
dead terminal), so the handler calls ``stop()`` (the stream controller's shutdown:
cancel, then wait up to a few seconds for the worker to save the answer's tail) and
exits at once. Everything else is already in the store.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable


def install_hangup(stop: Callable[[], None]) -> Callable[[], None] | None:
    """Handle SIGHUP with ``stop()`` then exit; returns the function that puts the old handler
    back, or None where there is no SIGHUP or this is not the main thread."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        return None

    def on_hup(signum, frame) -> None:
        stop()
        os._exit(128 + signum)

    try:
        old = signal.signal(signal.SIGHUP, on_hup)
    except ValueError:
        return None
    return lambda: signal.signal(signal.SIGHUP, old)
