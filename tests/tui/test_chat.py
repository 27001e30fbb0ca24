"""Pilot tests of the chat TUI: loading, streaming, stopping, continuing, input, resilience."""

from __future__ import annotations

import time

from textual import events

from chatcli.engine.events import Step
from chatcli.engine.params import SamplingParams
from chatcli.chat.store import Store
from chatcli.tui.widgets.answer import AnswerView
from chatcli.tui.widgets.markdown_body import MarkdownBody
from chatcli.tui.widgets.prompt import ChatInput
from chatcli.tui.widgets.transcript import LoadingBanner, Note, UserMessage
from tests.fake_engine import FakeEngine
from tests.tui_support import build_app, ready, run, send, until_idle, wait_for


def test_message_streams_token_by_token_and_renders_markdown():
    async def go():
        engine = FakeEngine(length=300, delay=0.001)
        engine.hold_at = 120
        app = build_app(engine)
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot)
            await pilot.press(*"hello there")
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.transcript.answers() and len(app.transcript.answers()[0].node.steps) == 120,
                           what="a partly streamed answer")
            view = app.transcript.answers()[0]
            assert app.busy and view.node.status == "streaming"
            await wait_for(pilot, lambda: view._md_fed == len(view.node.content), what="the UI to catch up")
            partial = view._md_fed
            engine.release.set()
            assert 0 < partial < 2000  # the Markdown has part of the answer already
            assert app.panel.step is not None and app.panel._following  # the panel follows the live step
            await until_idle(pilot)
            node = view.node
            assert node.status == "stop" and len(node.steps) == 300
            md = view.query_one(MarkdownBody)
            assert md.source == node.content and view._md_fed == len(node.content) > partial
            assert app.panel.step == node.steps[-1]
            assert [type(w) for w in app.transcript.children if isinstance(w, (UserMessage, AnswerView))] == [UserMessage, AnswerView]
            assert app.prompt.text == "" and isinstance(app.focused, ChatInput)
            assert "300 tokens" in str(view.query_one(".answer-header").render())

    run(go())


def test_escape_stops_the_answer_and_continue_resumes_it():
    async def go():
        engine = FakeEngine(length=100000, delay=0.001)
        engine.hold_at = 40
        app = build_app(engine)
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            await send(pilot, "write forever")
            await wait_for(pilot, lambda: app.transcript.answers() and len(app.transcript.answers()[0].node.steps) == 40)
            await pilot.press("escape")
            await until_idle(pilot)
            view = app.transcript.answers()[0]
            node = view.node
            assert node.status == "cancelled"
            assert "stopped" in str(view.query_one(".answer-footer").render())
            kept = node.ids
            assert kept and node.content == node.step_text
            # /continue goes on after exactly the kept tokens
            engine.hold_at = 30  # new steps of the continuation
            engine.release.clear()
            await send(pilot, "/continue")
            await wait_for(pilot, lambda: len(node.steps) == len(kept) + 30)
            assert engine.calls[-1]["prefix"] == kept
            await pilot.press("ctrl+c")  # Ctrl+C stops the answer, not the app
            await until_idle(pilot)
            assert app.is_running and node.status == "cancelled" and node.ids[: len(kept)] == kept
            # and a new message works after a stopped answer
            engine.length = 5
            await send(pilot, "short now")
            await until_idle(pilot)
            assert app.core.conv.leaf.status == "stop"
            assert engine.calls[-1]["messages"][-2] == {"role": "assistant", "content": node.content}

    run(go())


def test_input_newlines_paste_and_history():
    async def go():
        app = build_app(FakeEngine(length=3))
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            prompt = app.prompt
            await pilot.press(*"line one")
            await pilot.press("ctrl+j")
            await pilot.press(*"two")
            await pilot.press("alt+enter")
            await pilot.press(*"three")
            assert prompt.text == "line one\ntwo\nthree" and not app.core.conv.nodes
            prompt.clear()
            app.post_message(events.Paste("pasted\ntext\n"))  # as the terminal delivers it
            await pilot.pause()
            assert prompt.text == "pasted\ntext\n" and not app.core.conv.nodes  # a paste never sends
            await pilot.press("enter")
            await until_idle(pilot)
            assert app.core.conv.path()[0].content == "pasted\ntext"  # sent as typed, ends trimmed
            await send(pilot, "second")
            await until_idle(pilot)
            await pilot.press(*"draft")
            await pilot.press("up")
            assert prompt.text == "second"
            await pilot.press("up")
            assert prompt.text == "pasted\ntext\n"
            await pilot.press("down")
            await pilot.press("down")  # from the first line of a two-line entry: move down, then out
            await pilot.press("down")
            assert prompt.text in ("second", "draft")
            for _ in range(3):
                await pilot.press("down")
            assert prompt.text == "draft"

    run(go())


def test_message_typed_while_loading_is_sent_when_ready():
    async def go():
        app = build_app(FakeEngine(length=4), load_delay=0.6)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.05)
            assert app.query(LoadingBanner) and app.status.info.state == "loading"
            await send(pilot, "early bird")
            assert app.core.engine is None
            await ready(pilot)
            await until_idle(pilot)
            assert not app.query(LoadingBanner)
            assert [n.content for n in app.core.conv.path()][0] == "early bird"
            assert app.core.conv.leaf.status == "stop"

    run(go())


def test_failed_load_is_reported_and_commands_still_work():
    async def go():
        from chatcli.tui.app import make_app
        from tests.fake_engine import fake_factory

        app = make_app(fake_factory(fail="no model at /nowhere: pull it with `chatcli pull`"))
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: app.status.info.state == "no model")
            notes = [n.plain for n in app.query(Note)]
            assert any("could not load the model: no model at /nowhere" in t for t in notes)
            await send(pilot, "/help")
            assert "/retry" in list(app.query(Note))[-1].plain
            await send(pilot, "hello?")
            assert "no model is loaded" in list(app.query(Note))[-1].plain

    run(go())


def test_ui_keeps_handling_input_while_thousands_of_tokens_stream():
    async def go():
        engine = FakeEngine(length=3000, delay=0.001)
        engine.hold_at = 100
        app = build_app(engine, params=SamplingParams(temperature=0.8, seed=1, max_tokens=5000))
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot)
            await send(pilot, "flood")
            await wait_for(pilot, lambda: len(app.core.conv.leaf.steps) == 100)
            engine.release.set()  # from here on ~1000 tokens/s stream for a few seconds
            await wait_for(pilot, lambda: len(app.core.conv.leaf.steps) > 300)
            text = "typing while it streams"
            t0 = time.monotonic()
            for ch in text:  # keys as the terminal delivers them, all at once
                app.post_message(events.Key(ch if ch != " " else "space", ch))
            await wait_for(pilot, lambda: app.prompt.text == text, what="the typed keys")
            typed_in = time.monotonic() - t0
            assert app.busy, "the keys were handled while the answer was still streaming"
            assert typed_in < 1.0, f"{len(text)} keys took {typed_in:.2f}s while streaming"
            await pilot.press("f2")  # switching to the token view mid-stream
            await pilot.press("f3")
            await pilot.press("f3")
            await until_idle(pilot, timeout=60)
            node = app.core.conv.leaf
            assert len(node.steps) == 3000 and node.status == "stop"
            view = app.transcript.answers()[0]
            chunks = view._chunks
            assert len(chunks) > 1 and chunks[-1].end == 3000  # the token view is chunked
            assert "".join(s.text for s in node.steps) == node.content

    run(go())


def test_tiny_terminal_during_streaming_does_not_crash():
    async def go():
        app = build_app(FakeEngine(length=400, delay=0.002))
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot)
            await send(pilot, "resize me")
            await wait_for(pilot, lambda: len(app.core.conv.leaf.steps) > 20)
            await pilot.resize_terminal(12, 5)
            await pilot.pause(0.1)
            await pilot.resize_terminal(30, 8)
            await pilot.press("f2")
            await pilot.pause(0.1)
            await pilot.resize_terminal(1, 1)
            await pilot.pause(0.1)
            await pilot.resize_terminal(90, 30)
            await until_idle(pilot)
            assert app.core.conv.leaf.status == "stop" and len(app.core.conv.leaf.steps) == 400
            # below 96 columns the panel hides itself; F3 brings it back
            assert not app.panel.display or app.screen.has_class("-narrow")

    run(go())


def test_quit_while_streaming_saves_the_partial_answer(tmp_path):
    async def go():
        store = Store.open(tmp_path / "h.db")
        engine = FakeEngine(length=100000, delay=0.001)
        engine.hold_at = 30
        app = build_app(engine, store=store)
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            await send(pilot, "keep going")
            await wait_for(pilot, lambda: len(app.core.conv.leaf.steps) == 30)
            await pilot.press("ctrl+q")
            await pilot.pause(0.2)
        assert not app.is_running
        return app.core.conv.id, app.core.conv.leaf

    conv_id, leaf = run(go())
    loaded = Store.open(tmp_path / "h.db").load(conv_id)
    answer = loaded.leaf
    assert answer.status == "cancelled" and answer.steps == leaf.steps and answer.content == leaf.content


def test_store_failure_is_reported_and_chat_goes_on(tmp_path):
    async def go():
        app = build_app(FakeEngine(length=4), store=None, store_warning="cannot create /ro/data (Permission denied); chatting without saving")
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            assert any("chatting without saving" in n.plain for n in app.query(Note))
            assert not app.status.info.saving
            await send(pilot, "hi")
            await until_idle(pilot)
            assert app.core.conv.leaf.status == "stop"

    run(go())


def test_engine_notices_are_shown():
    async def go():
        app = build_app(FakeEngine(length=3, drop_notice_after_turns=1))
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            for text in ("one", "two"):
                await send(pilot, text)
                await until_idle(pilot)
            assert any("dropped 1 older turn" in n.plain for n in app.query(Note))

    run(go())


def test_steps_are_the_engines_steps():
    async def go():
        engine = FakeEngine(length=12)
        app = build_app(engine)
        async with app.run_test() as pilot:
            await ready(pilot)
            await send(pilot, "compare")
            await until_idle(pilot)
        return engine, app.core.conv.leaf

    engine, leaf = run(go())
    replay = [e for e in FakeEngine(length=12).chat(engine.calls[0]["messages"], SamplingParams(temperature=0.8, seed=1)) if isinstance(e, Step)]
    assert [s.id for s in replay] == leaf.ids


def test_engine_error_is_shown_and_the_chat_goes_on():
    async def go():
        engine = FakeEngine(length=20, fail_after=4)
        app = build_app(engine)
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            await send(pilot, "break")
            await until_idle(pilot)
            view = app.transcript.answers()[0]
            assert view.node.status == "error" and len(view.node.steps) == 4
            assert "NaN logits" in str(view.query_one(".answer-footer").render())
            assert any(n.kind == "error" and "NaN" in n.plain for n in app.query(Note))
            engine.fail_after = None
            await send(pilot, "/retry")
            await until_idle(pilot)
            assert app.core.conv.leaf.status == "stop" and view.sibling_pos == (1, 2)

    run(go())


def test_prompt_history_comes_from_saved_conversations(tmp_path):
    from chatcli.chat.core import ChatCore

    store = Store.open(tmp_path / "h.db")
    core = ChatCore(FakeEngine(length=2), store=store)
    for text in ("an older question", "the last question"):
        list(core.run(core.send(text)))

    async def go():
        app = build_app(FakeEngine(length=2), store=Store.open(tmp_path / "h.db"))
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            await pilot.press("up")
            assert app.prompt.text == "the last question"
            await pilot.press("up")
            assert app.prompt.text == "an older question"

    run(go())


def test_sibling_arrows_in_the_header_are_clickable():
    async def go():
        app = build_app(FakeEngine(length=6))
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            await send(pilot, "q")
            await until_idle(pilot)
            await send(pilot, "/retry")
            await until_idle(pilot)
            view = app.transcript.answers()[0]
            first, second = app.core.conv.siblings(view.node.id)[0]
            assert view.node is second
            header = view.query_one(".answer-header")
            left_arrow = len("◆ fake-tiny  ")
            await pilot.click(header, offset=(left_arrow, 0))
            await pilot.pause()
            assert view.node is first and app.core.conv.leaf is first

    run(go())


def test_a_job_started_while_an_answer_streams_is_refused_and_the_stream_goes_on():
    async def go():
        engine = FakeEngine(length=100000, delay=0.001)
        engine.hold_at = 10
        app = build_app(engine)
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            await send(pilot, "write")
            await wait_for(pilot, lambda: app.stream.streaming and len(app.stream.job.node.steps) == 10, what="a held answer")
            job, worker = app.stream.job, app.stream.handle
            app.commands.run_job(job)  # e.g. a plugin command that does not wait for the answer
            await pilot.pause(0.1)
            assert app.stream.job is job and app.stream.handle is worker  # no second worker
            assert any("still streaming" in str(n.message) for n in app._notifications)
            await pilot.press("escape")
            await until_idle(pilot)
            assert job.node.status == "cancelled"

    run(go())
