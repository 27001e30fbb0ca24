"""The status bar and /set say where the sampling values came from (the model, /set, a preset, ...)."""

from __future__ import annotations

from chatcli.engine.params import SamplingParams
from chatcli.hub.generation_config import GenerationDefaults
from chatcli.tui.widgets.status_fields import StatusInfo, fit, status_fields, zone_content
from tests.fake_engine import FakeEngine
from tests.tui_support import build_app, check_snapshot, ready, run, screen_text, send, wait_for

MODEL = "smollm2-135m-instruct"


def _bar(sources: dict, params=SamplingParams(temperature=0.2, top_p=0.9), width: int = 0) -> str:
    engine = FakeEngine(name=MODEL)
    info = StatusInfo(state="ready", identity=engine.identity, params=params, sources=sources)
    return zone_content(fit(status_fields(info), width), "left").plain


def test_values_from_the_model_are_tagged():
    bar = _bar({"temperature": "model", "top_p": "model"})
    assert "T 0.2 top-p 0.9 (model: T top-p) max 512" in bar


def test_flags_and_built_in_values_are_not_tagged():
    assert "(" not in _bar({"temperature": "flag", "top_p": "built-in"}).replace("(off)", "")


def test_mixed_sources_are_grouped_in_order():
    bar = _bar({"temperature": "/set", "top_p": "model", "top_k": "preset"},
               params=SamplingParams(temperature=0.5, top_p=0.9, top_k=40))
    assert "T 0.5 top-k 40 top-p 0.9 (/set: T · preset: top-k · model: top-p)" in bar


def test_the_tag_outlasts_max_and_seed_on_a_narrow_bar():
    bar = _bar({"temperature": "model", "top_p": "model"}, width=72)
    assert "(model: T top-p)" in bar and "max 512" not in bar


def _engine() -> FakeEngine:
    engine = FakeEngine(name=MODEL, length=12, report_speed=42.0)
    engine.generation_defaults = GenerationDefaults(sampling={"temperature": 0.2, "top_p": 0.9})
    return engine


async def _screens(size) -> tuple[str, str]:
    app = build_app(_engine(), params=None, layers={"flag": {"max_tokens": 64}}, model_name=MODEL)
    async with app.run_test(size=size) as pilot:
        await ready(pilot)
        await pilot.pause(0.1)
        start = screen_text(app)
        await send(pilot, "/set temperature 0.5")
        await send(pilot, "/set")
        await wait_for(pilot, lambda: "/set: T" in screen_text(app), what="the /set tag")
        await pilot.pause(0.1)
        return start, screen_text(app)


def test_80x24_bar_names_the_model_then_set():
    start, after = run(_screens((80, 24)))
    assert "T 0.2 top-p 0.9 (model: T top-p)" in start.splitlines()[-2]
    assert "T 0.5 top-p 0.9 (/set: T · model: top-p)" in after.splitlines()[-2]
    check_snapshot("param_sources_80x24", after)


def test_160x48_set_table_shows_each_source():
    start, after = run(_screens((160, 48)))
    cells = [line.strip(" │▃").split() for line in after.splitlines()]
    rows = {c[0]: c[:3] for c in cells if len(c) > 2 and c[1] != "="}  # the table, not the "name = value" line
    assert rows["temperature"] == ["temperature", "0.5", "/set"]
    assert rows["top_p"] == ["top_p", "0.9", "model"]
    assert rows["max_tokens"] == ["max_tokens", "64", "flag"]
    assert rows["top_k"][:2] == ["top_k", "0"]
    check_snapshot("param_sources_160x48", after)
