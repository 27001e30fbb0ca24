"""Run a call that might hang in a daemon thread: a hang fails the test instead of the whole run."""

from __future__ import annotations

import threading


def in_thread(fn, timeout_s: float = 10.0):
    """``fn()``'s value (or its exception, re-raised); an AssertionError when it is still running after ``timeout_s``."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout_s)
    assert not t.is_alive(), f"still blocked after {timeout_s} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")
