"""The chat TUI on a remote backend (fake vLLM server), through Pilot: answers stream, the panel
shows the server's alternatives or says why it has none, unsupported commands say so."""

from __future__ import annotations

from chatcli.cli.common import remote_factory
from chatcli.engine.params import SamplingParams
from chatcli.tui.app import make_app
from tests.remote_fakes import ANSWER, FakeServer
from tests.tui_support import ready, run, screen_text, send, until_idle, wait_for


def _app(url: str):
    factory = remote_factory(url, "fake-model", api_key_env=None, timeout=5, logprobs_mode="raw")
    return make_app(factory, params=SamplingParams(temperature=0, seed=1), flush_interval=0.02)


def after_one_answer(server: FakeServer, then) -> None:
    """Open the app on ``server``, send one message, wait for the answer, then run ``then(app, pilot)``."""

    async def go():
        app = _app(server.url)
        async with app.run_test(size=(140, 40)) as pilot:
            await ready(pilot)
            await send(pilot, "Capital of France?")
            await until_idle(pilot)
            await then(app, pilot)

    with server:
        run(go())


def test_tui_streams_from_a_server_with_logprobs_and_reports_what_it_cannot_do():
    async def then(app, pilot):
        node = app.core.conv.leaf
        assert node.content == "".join(ANSWER) and node.status == "stop" and node.steps[0].partial
        assert "fake-model" in screen_text(app)
        await send(pilot, "/raw")
        await send(pilot, "/continue")
        await wait_for(pilot, lambda: "not available on a remote backend" in screen_text(app), what="the refusal")
        await pilot.press("ctrl+up")  # inspect the last answer: the panel shows a step's returned alternatives
        await pilot.pause(0.2)
        screen = screen_text(app)
        assert "entropy over the 5 alternatives the server" in screen and "sampled –" in screen
        assert "London" in screen

    after_one_answer(FakeServer("vllm"), then)


def test_tui_panel_says_why_it_is_empty_without_logprobs():
    async def then(app, pilot):
        assert app.core.conv.leaf.content == "".join(ANSWER)
        await pilot.press("ctrl+up")
        await pilot.pause(0.2)
        screen = screen_text(app)
        assert "sends no token probabilities" in screen  # the notice in the transcript
        assert "no probabilities for this token" in screen  # the panel's own explanation

    after_one_answer(FakeServer("vllm", logprobs=False), then)


def test_tui_cut_stream_keeps_the_answer_and_retry_works():
    server = FakeServer("vllm", cut_after=3)

    async def then(app, pilot):
        cut = app.core.conv.leaf
        assert cut.status == "error" and cut.content == "".join(ANSWER[:3])
        assert "mid-answer after 3 tokens" in screen_text(app)
        server.cut_after = None
        await send(pilot, "/retry")
        await until_idle(pilot)
        assert app.core.conv.leaf.content == "".join(ANSWER) and app.core.conv.leaf.status == "stop"

    after_one_answer(server, then)
