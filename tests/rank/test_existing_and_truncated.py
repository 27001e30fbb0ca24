"""The conversation's own reply among the /rank candidates, and truncated answers: marked, never a target."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from chatcli.chat.session import Conversation
from chatcli.cli.main import main
from chatcli.engine.params import SamplingParams
from chatcli_rank.command import existing_reply, parse_rank_args
from chatcli_rank.export import Skipped, records
from chatcli_rank.ranking import Ranking
from chatcli_rank.screen import RankOutcome, RankScreen
from chatcli_rank.store import RankStore, default_path
from tests.rank_support import BatchFakeEngine, candidates, chat_registry, conversation
from tests.tui_support import build_app, ready, run, send, until_idle, wait_for


def test_rank_offers_the_existing_reply_marked_and_ranking_it_best_keeps_it(tmp_path):
    async def go():
        engine = BatchFakeEngine(length=8)
        app = build_app(engine, registry=chat_registry(), params=SamplingParams(temperature=0.0, seed=5))
        async with app.run_test(size=(110, 40)) as pilot:
            await ready(pilot)
            await send(pilot, "What is the capital of France?")
            await until_idle(pilot)
            reply = app.core.conv.leaf
            nodes = dict(app.core.conv.nodes)
            await send(pilot, "/rank 3")
            await wait_for(pilot, lambda: isinstance(app.screen, RankScreen) and app.screen.draft is not None, what="cards")
            screen = app.screen
            assert engine.batch_calls[-1]["n"] == 2  # two new answers beside the existing one
            own = screen.candidates[2]
            assert own.existing and own.text == reply.content and not any(c.existing for c in screen.candidates[:2])
            assert own.mean_model_prob is not None  # its steps came along
            assert "existing reply" in str(screen.cards()[2].border_title)
            assert "existing" in screen.title_text
            await pilot.press("3", "enter")
            await wait_for(pilot, lambda: not isinstance(app.screen, RankScreen), what="the screen to close")
            await pilot.pause()
            assert app.core.conv.leaf is reply and app.core.conv.nodes == nodes  # kept, no copy added
            [item] = RankStore.open(default_path()).items()
            assert [c.existing for c in item.candidates] == [False, False, True]
            assert item.ranking.best == (2,)

    run(go())


def test_existing_reply_keeps_how_it_ended_and_is_absent_without_an_answer():
    conv = Conversation()
    q = conv.add("user", "Tell me a long story.")
    assert existing_reply(conv) is None  # nothing answered yet
    conv.add("assistant", "Once upon a time", parent=q.id, status="length")
    own = existing_reply(conv)
    assert own.existing and own.truncated and own.finish_reason == "length" and own.text == "Once upon a time"
    conv.add("assistant", "", parent=q.id, status="error")
    assert existing_reply(conv) is None  # a failed (empty) reply is no candidate
    assert parse_rank_args("3").existing and not parse_rank_args("3 --no-existing").existing


def test_truncated_answers_are_marked_on_their_cards():
    cands = candidates(["whole", "cut", "stopped"])
    cands[1] = replace(cands[1], finish_reason="length")
    cands[2] = replace(cands[2], finish_reason="cancelled")

    async def go():
        from textual.app import App

        class Host(App):
            def on_mount(self) -> None:
                self.push_screen(RankScreen(conversation(), candidates=cands))

        app = Host()
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, RankScreen) and app.screen.draft is not None)
            cards = app.screen.cards()
            return [(str(cards[i].border_title), cards[i].has_class("-truncated")) for i in range(3)]

    titles = run(go())
    assert "TRUNCATED" not in titles[0][0] and not titles[0][1]
    assert "TRUNCATED (cut at max_tokens)" in titles[1][0] and titles[1][1]
    assert "TRUNCATED (stopped)" in titles[2][0] and titles[2][1]


@pytest.fixture
def store():
    s = RankStore.open(default_path())
    cands = candidates(["whole best", "cut best", "fine", "worst"])
    cands[1] = replace(cands[1], finish_reason="length")
    sid = s.add_set(conversation("Q?"), cands, model={"name": "m"})
    s.add_ranking(sid, Ranking(((1,), (0,), (2,), (3,)), "ranked"))  # the truncated answer ranked best
    yield s
    s.close()


def _pairs(rows):
    return [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows]


def test_truncated_answers_are_never_a_target_unless_asked(store):
    items = store.items()
    assert items[0].candidates[1].truncated
    skipped = Skipped()
    dpo = list(records(items, "dpo", skipped=skipped))
    assert "cut best" not in {c for c, _ in _pairs(dpo)} and ("whole best", "cut best") not in _pairs(dpo)
    assert _pairs(dpo) == [("whole best", "fine"), ("whole best", "worst"), ("fine", "worst")] and skipped.truncated == 3
    assert list(records(items, "sft")) == []  # the best answer is truncated: no SFT target
    kto = [(r["completion"][0]["content"], r["label"]) for r in records(items, "kto")]
    assert ("cut best", True) not in kto and ("whole best", False) in kto and all(list(r) == ["prompt", "completion", "label"] for r in records(items, "kto"))
    everything = list(records(items, "dpo", include_truncated=True))
    assert len(everything) == 6 and _pairs(everything)[0] == ("cut best", "whole best")
    assert [r["messages"][-1]["content"] for r in records(items, "sft", include_truncated=True)] == ["cut best"]


def test_export_without_output_writes_stdout_and_says_what_it_left_out(store, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["rank", "export", "--format", "dpo"])
    out, err = capsys.readouterr()
    assert exc.value.code == 0
    assert _pairs(json.loads(line) for line in out.splitlines()) == [("whole best", "fine"), ("whole best", "worst"), ("fine", "worst")]
    assert "to stdout" in err and "left out 3 record(s) whose target answer is truncated" in err
    with pytest.raises(SystemExit):
        main(["rank", "export", "--format", "sft", "--include-truncated"])
    out, _ = capsys.readouterr()
    assert json.loads(out)["messages"][-1]["content"] == "cut best"
