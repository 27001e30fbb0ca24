"""Pilot tests of /rank in the chat and of the ranking screen's keys."""

from __future__ import annotations

from dataclasses import replace

from textual.app import App
from textual.geometry import Region

from chatcli.chat.commands import execute
from chatcli.engine.params import SamplingParams
from chatcli.chat.store import Store
from chatcli.tui.widgets.transcript import Note
from chatcli_rank.screen import CandidateCard, RankOutcome, RankScreen
from chatcli_rank.store import RankStore, default_path
from tests.rank_support import BatchFakeEngine, candidates, chat_registry, conversation
from tests.tui_support import build_app, ready, run, send, until_idle, wait_for


def _rank_screen(app) -> RankScreen | None:
    return app.screen if isinstance(app.screen, RankScreen) else None


def test_rank_in_chat_ranks_with_keys_stores_and_the_chat_continues_from_the_best(tmp_path):
    async def go():
        engine = BatchFakeEngine(length=12)
        store = Store.open(tmp_path / "history.sqlite3")
        # The chat itself is greedy: /rank still samples at 0.8 with different seeds.
        app = build_app(engine, store=store, registry=chat_registry(), params=SamplingParams(temperature=0.0, seed=5))
        async with app.run_test(size=(110, 40)) as pilot:
            await ready(pilot)
            await send(pilot, "What is the capital of France?")
            await until_idle(pilot)
            first_answer = app.core.conv.leaf
            await send(pilot, "/rank 3 --no-existing")  # three new answers (the existing reply: test_existing_and_truncated)
            await wait_for(pilot, lambda: _rank_screen(app) is not None and _rank_screen(app).draft is not None, what="candidates")
            screen = _rank_screen(app)
            assert app.status.info.state == "ready" and not app.busy  # generation over: ranking needs no model
            call = engine.batch_calls[-1]
            assert call["n"] == 3 and call["params"].temperature == 0.8 and len(set(call["seeds"])) == 3
            assert [m["role"] for m in call["messages"]] == ["user"]  # up to the last user message, no old answer
            cands = screen.candidates
            assert len({c.text for c in cands}) == 3  # different seeds, different answers
            assert all(c.mean_model_prob is not None and 0 < c.mean_model_prob <= 1 for c in cands)
            assert len(screen.query(CandidateCard)) == 3
            await pilot.press("2", "3")  # best: answer 2, then 3; answer 1 is placed last by itself
            assert screen.draft.tiers() == [[1], [2], [0]]
            await pilot.press("enter")
            await wait_for(pilot, lambda: _rank_screen(app) is None, what="the screen to close")
            await pilot.pause()

            leaf = app.core.conv.leaf
            assert leaf.role == "assistant" and leaf.content == cands[1].text
            assert leaf.parent == first_answer.parent and leaf.id != first_answer.id  # a sibling of the greedy answer
            assert "".join(s.text for s in leaf.steps) == leaf.content and leaf.steps  # the probability view has it
            assert leaf.meta["ranked"]["candidate"] == 1
            assert any("answer 2 is now the reply" in n.plain for n in app.query(Note))

            rs = RankStore.open(default_path())
            items = rs.items()
            assert len(items) == 1 and items[0].ranking.tiers == ((1,), (2,), (0,))
            assert [c.text for c in items[0].candidates] == [c.text for c in cands]
            assert [c.seed for c in items[0].candidates] == call["seeds"]
            assert items[0].model["name"] == engine.identity.name
            assert items[0].messages == [{"role": "user", "content": "What is the capital of France?"}]

            # The chat goes on from the chosen answer, and it was saved with the conversation.
            await send(pilot, "And of Italy?")
            await until_idle(pilot)
            sent = engine.calls[-1]["messages"]
            assert sent[-2] == {"role": "assistant", "content": cands[1].text}
            assert sent[-1]["content"] == "And of Italy?"
        saved = Store.open(tmp_path / "history.sqlite3").load(app.core.conv.id)
        assert any(n.content == cands[1].text and n.steps for n in saved.nodes.values())

    run(go())


def test_rank_errors_are_one_line_and_change_nothing():
    async def go():
        engine = BatchFakeEngine(length=5)
        app = build_app(engine, registry=chat_registry())
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            await send(pilot, "/rank")
            assert "send a message first" in list(app.query(Note))[-1].plain
            await send(pilot, "hello")
            await until_idle(pilot)
            before = dict(app.core.conv.nodes)
            for line, expected in [
                ("/rank 11", "N must be between 2 and 10"),
                ("/rank 1", "N must be between 2 and 10"),
                ("/rank many", "N must be a whole number"),
                ("/rank 3 --bogus", "unknown option --bogus"),
                ("/rank 3 --temperature 0", "out of range"),
                ("/rank 3 --lora-mix", "needs at least one loaded LoRA adapter"),
            ]:
                await send(pilot, line)
                note = list(app.query(Note))[-1]
                assert expected in note.plain and "\n" not in note.plain.strip(), (line, note.plain)
                assert _rank_screen(app) is None
            assert app.core.conv.nodes == before and not engine.batch_calls

    run(go())


def test_escape_while_generating_stops_and_changes_nothing():
    async def go():
        engine = BatchFakeEngine(length=100000, delay=0.002)
        app = build_app(engine, registry=chat_registry())
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            engine.length = 3
            await send(pilot, "hi")
            await until_idle(pilot)
            engine.length = 100000
            engine.hold_at = 2  # the candidates wait there until Esc cancels them
            leaf = app.core.conv.leaf
            await send(pilot, "/rank 2")
            await wait_for(pilot, lambda: _rank_screen(app) is not None and engine.batch_calls, what="generation")
            await pilot.pause(0.1)
            assert _rank_screen(app).draft is None  # still generating
            # The chat is busy meanwhile: its status bar says so and idle-only commands (e.g. from the palette) wait.
            assert app.status.info.state == "ranking" and app.busy
            assert str(app.query_one("#status-left").render()).startswith("● ranking")
            assert not execute(app.commands, "/rank 2") and "has to wait" in list(app.query(Note))[-1].plain
            await pilot.press("escape")
            await wait_for(pilot, lambda: _rank_screen(app) is None, what="the screen to close")
            assert app.status.info.state == "ready" and not app.busy
            assert app.core.conv.leaf is leaf
            assert RankStore.open(default_path()).ranking_count() == 0

    run(go())


class _Host(App):
    def __init__(self, screen: RankScreen) -> None:
        super().__init__()
        self.rank_screen = screen
        self.outcome: RankOutcome | None = None

    def on_mount(self) -> None:
        self.push_screen(self.rank_screen, callback=lambda o: setattr(self, "outcome", o))


def _host(n: int = 4) -> _Host:
    texts = [f"answer number {i + 1} [with brackets]" for i in range(n)]
    return _Host(RankScreen(conversation(), candidates=candidates(texts, model_probs=[0.9, 0.5, 0.7, 0.2][:n])))


def test_screen_keys_order_tie_move_note_and_submit():
    async def go():
        app = _host()
        async with app.run_test(size=(100, 40)) as pilot:
            await wait_for(pilot, lambda: app.rank_screen.draft is not None)
            s = app.rank_screen
            assert "mean p 0.90" in str(s.cards()[0].border_subtitle)
            assert "reward" not in str(s.cards()[0].border_subtitle)  # no reward model scored these
            await pilot.press("enter")  # nothing ranked yet: refused, the screen stays
            assert app.outcome is None and app.screen is s
            await pilot.press("3", "1")  # 3 best, then 1
            assert s.draft.order[:2] == [2, 0] and s.draft.placed == 2
            await pilot.press("1")  # pressing a placed answer takes it back
            assert s.draft.placed == 1
            await pilot.press("1", "4")  # 3 > 1 > 4 > 2 (the last one placed by itself)
            assert s.draft.tiers() == [[2], [0], [3], [1]]
            await pilot.press("t")  # the selected answer (4) ties with the one above (1)
            assert s.draft.tiers() == [[2], [0, 3], [1]]
            await pilot.press("up", "up", "shift+down")  # select answer 3, move it down one place
            assert s.draft.order[:2] == [0, 2]
            await pilot.press("n", *"too long", "enter")
            assert s.draft.note == "too long"
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.outcome is not None)
        r = app.outcome.ranking
        assert r.status == "ranked" and r.note == "too long" and r.best == (0,)
        assert r.tiers[0] == (0,) and set(r.order) == {0, 1, 2, 3} and r.duration_s is not None

    run(go())


def test_screen_all_bad_skip_and_leave():
    async def go(keys: list[str]):
        app = _host(3)
        async with app.run_test(size=(100, 40)) as pilot:
            await wait_for(pilot, lambda: app.rank_screen.draft is not None)
            await pilot.press(*keys)
            await wait_for(pilot, lambda: app.outcome is not None)
        return app.outcome.ranking

    assert run(go(["b", "enter"])).status == "all_bad"
    skipped = run(go(["2", "s"]))
    assert skipped.status == "skipped"
    assert run(go(["escape"])) is None


def test_cards_show_the_reward_score_next_to_the_mean_probability_once_submitted():
    async def go():
        scored = [replace(c, reward=r) for c, r in zip(candidates(["a", "b"], model_probs=[0.9, 0.4]), [1.5, -0.25])]
        app = _Host(RankScreen(conversation(), candidates=scored))
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: app.rank_screen.draft is not None)
            assert "reward" not in str(app.rank_screen.cards()[0].border_subtitle)  # the person ranks unswayed
            await pilot.press("1", "enter")
            await wait_for(pilot, lambda: app.rank_screen.revealed is not None)
            subtitles = [str(app.rank_screen.cards()[i].border_subtitle) for i in (0, 1)]
        assert subtitles[0].startswith("mean p 0.90  ·  reward +1.50  ·  ")
        assert subtitles[1].startswith("mean p 0.40  ·  reward -0.25  ·  ")

    run(go())


def _card_lines(card: CandidateCard) -> list[str]:
    size = card.outer_size
    return [strip.text for strip in card.render_lines(Region(0, 0, size.width, size.height))]


def test_cards_render_answers_as_markdown_and_keep_their_layout():
    async def go():
        texts = ["Use this:\n\n```python\nprint('hi')\n```\n\n- one\n- **two**", "plain [b]not markup[/b]\nsecond line"]
        app = _Host(RankScreen(conversation(), candidates=candidates(texts)))
        async with app.run_test(size=(100, 40)) as pilot:
            await wait_for(pilot, lambda: app.rank_screen.draft is not None)
            await pilot.press("2")  # re-ranking restyles the border, the Markdown stays
            await pilot.pause()
            first, second = (_card_lines(app.rank_screen.cards()[i]) for i in (0, 1))
        body = "\n".join(first)
        assert "print('hi')" in body and "```" not in body  # a code block, not fences
        assert "• one" in body and "• two" in body and "**" not in body  # a list, bold applied
        assert first[0].startswith("╭─ 1  2nd") and "mean p 0.50  ·  " in first[-1]  # title and subtitle as before
        assert second[0].startswith("┏━ 2  1st")
        assert any("plain [b]not markup[/b]" in line for line in second)  # brackets are text, not markup
        assert any(line.strip("┃ ").startswith("second line") for line in second)  # single newlines kept

    run(go())
