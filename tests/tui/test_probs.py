"""Pilot tests of the probability view: token navigation, the panel, tints, branching, siblings, resume."""

from __future__ import annotations

from chatcli.chat.core import ChatCore
from chatcli.engine.params import SamplingParams
from chatcli.chat.store import Store
from chatcli.tui.widgets.answer import AnswerView
from chatcli.tui.widgets.token_chunk import TokenChunk
from chatcli.tui.widgets.probs import AltList
from chatcli.tui.token_text import UNCERTAIN, tint_style
from tests.fake_engine import FakeEngine
from tests.tui_support import build_app, ready, run, send, until_idle, wait_for


def _panel_text(app) -> str:
    return str(app.panel.query_one("#probs-summary").render())


def test_navigate_tokens_and_read_the_panel():
    async def go():
        app = build_app(FakeEngine(length=40))
        async with app.run_test(size=(130, 40)) as pilot:
            await ready(pilot)
            await send(pilot, "explain")
            await until_idle(pilot)
            node = app.core.conv.leaf
            await pilot.press("ctrl+up")
            view = app.focused
            assert isinstance(view, AnswerView) and view.node is node
            assert view.cursor == 39 and view.has_class("-tokens")  # inspecting shows the token view
            assert app.panel.step == node.steps[39]
            await pilot.press("left", "left", "left")
            assert view.cursor == 36 and app.panel.step == node.steps[36] and app.panel.index == 36
            step = node.steps[36]
            text = _panel_text(app)
            assert "step 37 of 40" in text and f"{step.entropy:.2f} bits" in text and f"id {step.id}" in text
            alts = app.query_one(AltList)
            assert alts.option_count >= len(step.top)
            await pilot.press("home")
            assert view.cursor == 0
            await pilot.press("right_square_bracket")  # the next uncertain token
            first_uncertain = next(i for i, s in enumerate(node.steps) if i > 0 and s.model_prob < UNCERTAIN)
            assert view.cursor == first_uncertain
            await pilot.press("end")
            assert view.cursor == 39
            await pilot.press("escape")
            assert app.focused is app.prompt and not view.has_class("-tokens")  # back to Markdown

    run(go())


def test_click_a_token_selects_it():
    async def go():
        app = build_app(FakeEngine(length=30), tint="model_prob")
        async with app.run_test(size=(130, 40)) as pilot:
            await ready(pilot)
            await send(pilot, "click me")
            await until_idle(pilot)
            view = app.transcript.answers()[0]
            assert view.has_class("-tokens")
            chunk = view.query_one(TokenChunk)
            await pilot.click(chunk, offset=(0, 0))
            await pilot.pause()
            assert app.focused is view and view.cursor == 0 and app.panel.step == view.node.steps[0]

    run(go())


def test_tint_follows_model_prob_or_entropy_and_toggles():
    async def go():
        app = build_app(FakeEngine(length=60))
        async with app.run_test(size=(130, 40)) as pilot:
            await ready(pilot)
            await send(pilot, "tint")
            await until_idle(pilot)
            view = app.transcript.answers()[0]
            assert not view.has_class("-tokens")
            await pilot.press("f2")
            assert app.tint == "model_prob" and view.has_class("-tokens")
            content = view.query_one(TokenChunk).render()
            steps = view.node.steps
            styled = {span.start: span.style for span in content.spans}
            # an uncertain token carries a background; a near-certain one does not
            unsure = next(i for i, s in enumerate(steps) if s.model_prob < 0.3)
            sure = next((i for i, s in enumerate(steps) if s.model_prob > 0.95), None)
            start = sum(len(s.text) for s in steps[:unsure])
            assert styled[start].background is not None
            assert tint_style(steps[unsure], "model_prob").background == styled[start].background
            if sure is not None:
                assert tint_style(steps[sure], "model_prob") is None
            await pilot.press("f2")
            assert app.tint == "entropy" and view.token_tint == "entropy"
            await pilot.press("f2")
            assert app.tint == "off" and not view.has_class("-tokens")
            await send(pilot, "/tint entropy")
            assert app.tint == "entropy"

    run(go())


def test_raw_vs_sampled_toggle():
    async def go():
        app = build_app(FakeEngine(length=20), params=SamplingParams(temperature=0.5, top_k=3, seed=2))
        async with app.run_test(size=(140, 40)) as pilot:
            await ready(pilot)
            await send(pilot, "compare")
            await until_idle(pilot)
            await pilot.press("ctrl+up")
            alts = app.query_one(AltList)
            plain = str(alts.get_option_at_index(0).prompt)
            await pilot.press("f4")
            assert app.panel.compare
            rows = [str(alts.get_option_at_index(i).prompt) for i in range(alts.option_count)]
            assert rows[0] != plain
            assert any("cut" in r for r in rows[3:])  # top_k=3: the 4th and 5th were cut from the sampled distribution
            assert "sampled" in str(app.panel.query_one("#probs-legend").render())

    run(go())


def test_branch_from_an_alternative_and_switch_siblings():
    async def go():
        engine = FakeEngine(length=30)
        app = build_app(engine)
        async with app.run_test(size=(130, 40)) as pilot:
            await ready(pilot)
            await send(pilot, "branch me")
            await until_idle(pilot)
            original = app.core.conv.leaf
            await pilot.press("ctrl+up")
            view = app.focused
            await pilot.press("home", "right", "right", "right")
            at = 3
            step = original.steps[at]
            rank = next(i for i, t in enumerate(step.top) if t.id != step.id) + 1
            await pilot.press(str(rank))
            await until_idle(pilot)
            branch = app.core.conv.leaf
            assert branch.id != original.id and branch.parent == original.parent
            assert branch.ids[:at] == original.ids[:at] and branch.ids[at] == step.top[rank - 1].id
            assert engine.calls[-1]["prefix"] == original.ids[:at] + [step.top[rank - 1].id]
            assert view.node is branch and view.sibling_pos == (1, 2)
            assert "2/2" in str(view.query_one(".answer-header").render())
            assert "branched at token 4" in str(view.query_one(".answer-header").render())
            # switch back to the first version and forward again (from the inspector: Ctrl+↑)
            await pilot.press("ctrl+up")
            assert app.focused is view
            await pilot.press("comma")
            assert view.node is original and app.core.conv.leaf is original and view.sibling_pos == (0, 2)
            await pilot.press("full_stop")
            assert view.node is branch
            # branch through the panel: Enter focuses the alternatives, Enter picks one
            await pilot.press("home")
            await pilot.press("enter")
            alts = app.query_one(AltList)
            assert app.focused is alts
            s0 = branch.steps[0]
            pick = next(i for i, t in enumerate(s0.top) if t.id != s0.id)
            alts.highlighted = pick
            await pilot.press("enter")
            await until_idle(pilot)
            third = app.core.conv.leaf
            assert third.ids[0] == s0.top[pick].id and len(app.core.conv.siblings(third.id)[0]) == 3

    run(go())


def test_branch_while_streaming_stops_then_branches():
    async def go():
        engine = FakeEngine(length=100000, delay=0.001)
        engine.hold_at = 20
        app = build_app(engine)
        async with app.run_test(size=(130, 40)) as pilot:
            await ready(pilot)
            await send(pilot, "long")
            await wait_for(pilot, lambda: len(app.core.conv.leaf.steps) == 20)
            original = app.core.conv.leaf
            await pilot.press("ctrl+up")
            view = app.focused
            await pilot.press("home")
            s0 = original.steps[0]
            rank = next(i for i, t in enumerate(s0.top) if t.id != s0.id) + 1
            engine.length = 10
            await pilot.press(str(rank))
            await wait_for(pilot, lambda: app.core.conv.leaf is not original and not app.busy)
            assert original.status == "cancelled"
            assert app.core.conv.leaf.ids[0] == s0.top[rank - 1].id and view.node is app.core.conv.leaf

    run(go())


def test_resumed_conversation_keeps_its_probabilities(tmp_path):
    store = Store.open(tmp_path / "h.db")
    core = ChatCore(FakeEngine(length=25), store=store, params=SamplingParams(seed=4))
    list(core.run(core.send("first question")))
    list(core.run(core.retry()))
    list(core.run(core.send("second question")))
    conv_id = core.conv.id
    saved = core.conv

    async def go():
        app = build_app(FakeEngine(length=5), store=Store.open(tmp_path / "h.db"), resume=conv_id)
        async with app.run_test(size=(130, 40)) as pilot:
            await ready(pilot)
            answers = app.transcript.answers()
            assert [a.node.content for a in answers] == [n.content for n in saved.path() if n.role == "assistant"]
            assert answers[0].sibling_pos == (1, 2)
            await pilot.press("ctrl+up")
            await pilot.press("left")
            leaf = saved.leaf
            assert app.panel.step == leaf.steps[-2]
            assert app.status.info.conv_id == conv_id
            await send(pilot, "third")
            await until_idle(pilot)
            assert len(app.core.conv.path()) == 6

    run(go())
    again = Store.open(tmp_path / "h.db").load(conv_id)
    assert len(again.path()) == 6 and again.path()[-2].content == "third"


def test_resume_latest_and_bad_id(tmp_path):
    store = Store.open(tmp_path / "h.db")
    core = ChatCore(FakeEngine(length=3), store=store)
    list(core.run(core.send("only one")))

    async def go():
        app = build_app(store=Store.open(tmp_path / "h.db"), resume="latest")
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            assert app.core.conv.id == core.conv.id
        app = build_app(store=Store.open(tmp_path / "h.db"), resume=99)
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            from chatcli.tui.widgets.transcript import Note

            assert any("no conversation 99" in n.plain for n in app.query(Note))
            assert app.core.conv.is_empty()

    run(go())
