"""Snapshot tests of key screens, compared as plain text (tests/snapshots/*.txt).

The fake engine is greedy and reports a fixed speed, so screens are reproducible.
After an intended change of the UI, run with CHATCLI_UPDATE_SNAPSHOTS=1 and review the diff.
"""

from __future__ import annotations

from chatcli.engine.params import SamplingParams
from tests.fake_engine import FakeEngine
from tests.tui_support import build_app, check_snapshot, ready, run, screen_text, send, until_idle

GREEDY = SamplingParams(temperature=0, max_tokens=64)


def _app(**kw):
    return build_app(FakeEngine(length=kw.pop("length", 48), report_speed=42.0), params=GREEDY, **kw)


def test_snapshot_welcome():
    async def go():
        app = _app()
        async with app.run_test(size=(110, 28)) as pilot:
            await ready(pilot)
            await pilot.pause(0.1)
            check_snapshot("welcome", screen_text(app))

    run(go())


def test_snapshot_answer_with_panel():
    async def go():
        app = _app()
        async with app.run_test(size=(120, 32)) as pilot:
            await ready(pilot)
            await send(pilot, "What is the capital of France?")
            await until_idle(pilot)
            await pilot.pause(0.1)
            check_snapshot("answer_with_panel", screen_text(app))

    run(go())


def test_snapshot_token_inspection_with_sampled_column():
    async def go():
        app = build_app(FakeEngine(length=48, report_speed=42.0), params=SamplingParams(temperature=0.7, top_k=3, seed=5, max_tokens=64))
        async with app.run_test(size=(130, 32)) as pilot:
            await ready(pilot)
            await send(pilot, "Inspect me")
            await until_idle(pilot)
            await pilot.press("ctrl+up", "home", "right", "right", "f4")
            await pilot.pause(0.1)
            check_snapshot("token_inspection", screen_text(app))

    run(go())


def test_snapshot_command_hints_and_narrow_terminal():
    async def go():
        app = _app()
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(pilot)
            await send(pilot, "hello")
            await until_idle(pilot)
            await pilot.press("slash", "s")
            await pilot.pause(0.1)
            check_snapshot("hints_narrow", screen_text(app))

    run(go())
