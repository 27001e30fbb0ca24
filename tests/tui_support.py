"""Helpers for the Pilot tests of the chat TUI: building the app on the fake engine, waiting, reading the screen."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from chatcli.engine.params import SamplingParams
from chatcli.chat.store import Store
from chatcli.tui.app import ChatApp, make_app
from tests.fake_engine import FakeEngine, fake_factory

SNAPSHOTS = Path(__file__).parent / "tui" / "snapshots"


def build_app(engine: FakeEngine | None = None, *, store: Store | None = None, **options) -> ChatApp:
    engine = engine or FakeEngine()
    options.setdefault("params", SamplingParams(temperature=0.8, seed=1))
    options.setdefault("flush_interval", 0.02)
    return make_app(fake_factory(engine, load_delay=options.pop("load_delay", 0.0)), store=store, **options)


async def wait_for(pilot, condition, timeout: float = 10.0, what: str = "condition") -> None:
    """Let the app run until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


async def ready(pilot) -> None:
    await wait_for(pilot, lambda: pilot.app.core.engine is not None, what="the model to load")
    await pilot.pause()


async def send(pilot, text: str) -> None:
    pilot.app.prompt.focus()
    pilot.app.prompt.load_text(text)
    await pilot.press("enter")
    await pilot.pause()


async def until_idle(pilot, timeout: float = 20.0) -> None:
    await wait_for(pilot, lambda: not pilot.app.busy, timeout, "the answer to finish")
    await pilot.pause()


def screen_text(app: ChatApp) -> str:
    """What the terminal shows, as plain text (one line per row, right-stripped)."""
    strips = app.screen._compositor.render_strips()
    return "\n".join(s.text.rstrip() for s in strips)


def check_snapshot(name: str, text: str) -> None:
    """Compare with tests/snapshots/NAME.txt; CHATCLI_UPDATE_SNAPSHOTS=1 rewrites it."""
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("CHATCLI_UPDATE_SNAPSHOTS") or not path.exists():
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
        if not os.environ.get("CHATCLI_UPDATE_SNAPSHOTS"):
            raise AssertionError(f"snapshot {path.name} written; run again to compare")
        return
    expected = path.read_text(encoding="utf-8").rstrip("\n")
    if text != expected:
        import difflib

        diff = "\n".join(difflib.unified_diff(expected.splitlines(), text.splitlines(), "expected", "actual", lineterm=""))
        raise AssertionError(f"screen differs from {path.name} (CHATCLI_UPDATE_SNAPSHOTS=1 to accept):\n{diff}")


def run(coro):
    return asyncio.run(coro)
