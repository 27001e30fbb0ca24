"""The guided tour in the TUI: the card above the prompt (snapshots at 80x24), the chapter in the transcript,
✓ as the chat's events meet the goals, and chapter 4 (/raw) end to end on a real tiny model."""

from __future__ import annotations

import pytest

from chatcli.cli.chat import engine_factory
from chatcli.engine.params import SamplingParams
from chatcli.tour.guide import Tour
from chatcli.tui.app import make_app
from chatcli.tui.widgets.tour_card import TourCard
from chatcli.tui.widgets.transcript import Note
from tests.fake_engine import FakeEngine
from tests.tui_support import build_app, check_snapshot, ready, run, screen_text, send, until_idle, wait_for

GREEDY = SamplingParams(temperature=0, max_tokens=24)


def _notes(app) -> list[str]:
    return [n.plain for n in app.query(Note)]


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_snapshot_tour_card_with_a_goal_met(tmp_path, size):
    async def go():
        tour = Tour(tmp_path / "tour.json")
        tour.start(2)
        app = build_app(FakeEngine(length=8, report_speed=42.0), params=GREEDY, tour=tour)
        async with app.run_test(size=size) as pilot:
            await ready(pilot)
            await send(pilot, "/set temperature 1.5")
            await wait_for(pilot, lambda: "✓ /set a sampling setting" in screen_text(app), what="the ✓")
            lines = screen_text(app).splitlines()
            top = next(i for i, line in enumerate(lines) if line.startswith("▔▔▔"))  # the card's top edge
            card = lines[top : top + 6]  # the card and the prompt under it: the transcript keeps the rest
            assert len(lines) - top <= 8 and "○ an answer with it" in card[2]
            check_snapshot(f"tour_card_{size[0]}x{size[1]}", "\n".join(card))

    run(go())


def test_the_card_is_hidden_until_tour_and_follows_the_chapter(tmp_path):
    async def go():
        tour = Tour(tmp_path / "tour.json")
        app = build_app(FakeEngine(length=6), params=GREEDY, tour=tour)
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            card = app.query_one(TourCard)
            assert not card.display and "Tour 1/9" not in screen_text(app)
            await send(pilot, "/tour 3")
            await pilot.pause(0.1)
            assert card.display
            assert any(n.startswith("Tour 3/9 · Tokens: what the model reads") for n in _notes(app))
            await send(pilot, "/tour off")
            await pilot.pause(0.1)
            assert not card.display and tour.view().chapter.number == 3
            await send(pilot, "/tour next")  # not done: one line, nothing moves
            await pilot.pause(0.1)
            assert "chapter 3 is not done yet" in _notes(app)[-1] and tour.chapter.number == 3

    run(go())


def test_selecting_tokens_meets_chapter_1(tmp_path):
    async def go():
        tour = Tour(tmp_path / "tour.json")
        tour.start(1)
        app = build_app(FakeEngine(length=16), params=GREEDY, tour=tour)
        async with app.run_test(size=(120, 30)) as pilot:
            await ready(pilot)
            await send(pilot, "hello")
            await until_idle(pilot)
            assert tour.view().met == frozenset()  # an answer alone is not looking at it
            await pilot.press("ctrl+up", "home")
            for _ in range(15):
                await pilot.press("right")
            await pilot.pause(0.1)
            steps = app.core.conv.leaf.steps
            expected = ({"near"} if min(s.entropy for s in steps) <= 0.5 else set()) | (
                {"wide"} if max(s.entropy for s in steps) >= 3 else set())
            assert tour.view().met == expected and expected

    run(go())


def test_chapter_4_end_to_end_on_a_tiny_model(tiny_model_dir, tmp_path):
    async def go():
        tour = Tour(tmp_path / "tour.json")
        tour.start(4)
        app = make_app(engine_factory(str(tiny_model_dir), "float32", "cpu", None), params=GREEDY,
                       flush_interval=0.02, tour=tour)  # fmt: skip
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(pilot)
            assert "Tour 4/9 · A conversation is one long text" in _notes(app)[0]  # the chapter, at start
            await send(pilot, "My name is Ada.")
            await until_idle(pilot)
            assert "○ a second turn answered" in screen_text(app)
            await send(pilot, "What is my name?")
            await until_idle(pilot)
            await wait_for(pilot, lambda: "✓ a second turn answered" in screen_text(app), what="the first ✓")
            await send(pilot, "/raw")
            await wait_for(pilot, lambda: "✓ done · /tour next" in screen_text(app), what="the chapter done")
            assert any("<|im_start|>user\nWhat is my name?" in n for n in _notes(app))  # /raw showed the one text
            assert any(n.startswith("tour ✓ chapter 4 done") for n in _notes(app))
            await send(pilot, "/tour next")
            await wait_for(pilot, lambda: "Tour 5/9 · Pretraining, then instruction tuning" in screen_text(app),
                           what="chapter 5 on the card")  # fmt: skip
        resumed = Tour(tmp_path / "tour.json")
        assert resumed.view().chapter.number == 5 and resumed.view().done == {4}

    run(go())


def test_opening_the_what_if_view_meets_chapter_2s_first_goal(tmp_path):
    async def go():
        tour = Tour(tmp_path / "tour.json")
        tour.start(2)
        app = build_app(FakeEngine(length=6), params=GREEDY, tour=tour)
        async with app.run_test(size=(120, 30)) as pilot:
            await ready(pilot)
            await send(pilot, "hello")
            await until_idle(pilot)
            await pilot.press("ctrl+up", "w")
            await wait_for(pilot, lambda: "whatif" in tour.view().met, what="the what-if goal")
            assert "✓ reshape a step: /whatif or w" in screen_text(app)

    run(go())


def test_a_token_selected_while_the_panel_is_hidden_is_not_seen(tmp_path):
    async def go():
        tour = Tour(tmp_path / "tour.json")
        tour.start(1)
        app = build_app(FakeEngine(length=16), params=GREEDY, tour=tour)
        async with app.run_test(size=(80, 24)) as pilot:  # narrow: the panel starts hidden
            await ready(pilot)
            await send(pilot, "hello")
            await until_idle(pilot)
            await pilot.press("ctrl+up", "home", *["right"] * 15)
            await pilot.pause(0.1)
            assert not app.panel.display and tour.view().met == frozenset()
            await pilot.press("f3", "left")  # the panel shows what the step was: now it counts
            await wait_for(pilot, lambda: tour.view().met, what="a step seen")

    run(go())


def test_chapter_5_complete_runs_off_the_ui_thread_then_a_chat_answer(tmp_path):
    async def go():
        tour = Tour(tmp_path / "tour.json")
        tour.start(5)
        app = build_app(FakeEngine(length=6), params=GREEDY, tour=tour)
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            await send(pilot, "/complete The capital of France is")
            await wait_for(pilot, lambda: any(n.startswith("plain continuation, no chat template") for n in _notes(app)),
                           what="the continuation")  # fmt: skip
            await until_idle(pilot)  # the status bar's "completing" is over
            assert app.core.conv.is_empty() and tour.view().met == {"complete"}
            await send(pilot, "The capital of France is")
            await until_idle(pilot)
            await wait_for(pilot, lambda: tour.view().chapter_done, what="chapter 5 done")

    run(go())
