"""Pilot tests of the ranking screen's contradiction notice and of the rewards it shows after a submit."""

from __future__ import annotations

from dataclasses import replace

from textual.app import App

from chatcli_rank.annotate import AnnotateApp
from chatcli_rank.consistency import judgement
from chatcli_rank.jsonl import QueueItem
from chatcli_rank.ranking import Ranking
from chatcli_rank.screen import RankOutcome, RankScreen
from chatcli_rank.store import RankStore
from tests.rank_support import candidates, conversation
from tests.tui_support import run, wait_for


class _Host(App):
    def __init__(self, screen: RankScreen) -> None:
        super().__init__()
        self.rank_screen = screen
        self.outcome: RankOutcome | None = None
        self.notes: list[str] = []

    def notify(self, message, **kwargs) -> None:
        self.notes.append(str(message))
        super().notify(message, **kwargs)

    def on_mount(self) -> None:
        self.push_screen(self.rank_screen, callback=lambda o: setattr(self, "outcome", o))


def _notice(screen: RankScreen) -> str:
    widget = screen.query_one("#rank-conflict")
    return str(widget.render()) if widget.display and widget.has_class("-shown") else ""


def _status(screen: RankScreen) -> str:
    return str(screen.query_one("#rank-status").render())


def test_a_draft_that_contradicts_an_earlier_ranking_shows_a_notice_naming_it():
    q = conversation()
    earlier = [judgement(12, 4, 1_700_000_000.0, q, ["Paris.", "Lyon.", "Rome."], Ranking(((0,), (1,), (2,))))]

    async def go():
        app = _Host(RankScreen(q, candidates=candidates(["Lyon.", "Paris.", "Nice."]), earlier=earlier))
        async with app.run_test(size=(110, 40)) as pilot:
            s = app.rank_screen
            await wait_for(pilot, lambda: s.draft is not None)
            assert _notice(s) == ""  # nothing ranked yet
            await pilot.press("2")  # Paris first: as before
            assert _notice(s) == ""
            await pilot.press("2")  # take it back
            await pilot.press("1")  # Lyon first: puts Lyon above Paris, the other way round from #12
            notice = _notice(s)
            assert "1 > 2 here, but ranking #12 (" in notice and "put 2 above 1" in notice
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.outcome is not None)
            warned = list(app.notes)
        assert app.outcome.ranking.best == (0,)  # stored all the same: the notice informs, never blocks
        assert any("stored, but it contradicts" in m and "ranking #12" in m for m in warned)

    run(go())


def test_two_equal_answers_ranked_apart_are_flagged_without_earlier_rankings():
    async def go():
        app = _Host(RankScreen(conversation(), candidates=candidates(["Same answer.", "Other.", "Same\nanswer."])))
        async with app.run_test(size=(110, 40)) as pilot:
            s = app.rank_screen
            await wait_for(pilot, lambda: s.draft is not None)
            await pilot.press("1", "3")  # Same > Same > Other (the last placed by itself)
            assert "answers 1 and 3 say the same but are ranked 1 > 3" in _notice(s)
            await pilot.press("t")  # tie 3 with 1: equal texts in one tier, nothing to flag
            assert s.draft.tiers() == [[0, 2], [1]] and _notice(s) == ""

    run(go())


def test_rewards_appear_after_the_submit_with_the_reward_models_agreement():
    scored = [replace(c, reward=r) for c, r in zip(candidates(["a", "b", "c"]), [2.0, -1.0, 0.5])]

    async def go():
        stored: list[RankOutcome] = []
        app = _Host(RankScreen(conversation(), candidates=scored, on_done=stored.append))
        async with app.run_test(size=(110, 40)) as pilot:
            s = app.rank_screen
            await wait_for(pilot, lambda: s.draft is not None)
            assert all("reward" not in str(card.border_subtitle) for card in s.cards().values())
            await pilot.press("1", "2", "enter")  # a > b > c; the rewards say a > c > b
            await wait_for(pilot, lambda: s.revealed is not None)
            assert len(stored) == 1 and app.outcome is None  # stored, the screen stays to show the rewards
            rewards = {i: str(card.border_subtitle) for i, card in s.cards().items()}
            assert "reward +2.00" in rewards[0] and "reward -1.00" in rewards[1] and "reward +0.50" in rewards[2]
            status = _status(s)
            assert "orders 2 of your 3 pairs the same way (not 2 > 3)" in status and "Enter or Esc closes" in status
            await pilot.press("3")  # the ranking is done: keys no longer change it
            assert s.draft.tiers() == [[0], [1], [2]]
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.outcome is not None)
        assert app.outcome.ranking.tiers == ((0,), (1,), (2,)) and len(stored) == 1

    run(go())


def test_unscored_candidates_close_at_the_submit_as_before():
    async def go():
        app = _Host(RankScreen(conversation(), candidates=candidates(["a", "b"])))
        async with app.run_test(size=(110, 40)) as pilot:
            await wait_for(pilot, lambda: app.rank_screen.draft is not None)
            await pilot.press("1", "enter")
            await wait_for(pilot, lambda: app.outcome is not None)
        assert app.rank_screen.revealed is None

    run(go())


def test_annotate_warns_when_a_later_item_contradicts_an_earlier_one_of_the_session(tmp_path):
    q = conversation("Which city?")
    items = [QueueItem(1, q, candidates(["Paris.", "Lyon."])), QueueItem(2, q, candidates(["Lyon.", "Paris.", "Rome."]))]

    async def go():
        with RankStore.open(tmp_path / "r.sqlite3") as store:
            app = AnnotateApp(store, items, source="q.jsonl")
            async with app.run_test(size=(110, 40)) as pilot:
                await wait_for(pilot, lambda: isinstance(app.screen, RankScreen) and app.screen.draft is not None)
                await pilot.press("1", "enter")  # item 1: Paris > Lyon
                await wait_for(pilot, lambda: app.position == 1 and app.screen.draft is not None)
                second = app.screen
                await pilot.press("1")  # item 2: Lyon first
                notice = _notice(second)
                ranking_id = app.tally.ranking_ids[0]
            assert f"1 > 2 here, but ranking #{ranking_id} (" in notice

    run(go())
