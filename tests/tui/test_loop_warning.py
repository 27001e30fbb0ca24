"""The chat TUI on an engine whose answer loops: a warning note appears while it streams, the answer goes on."""

from __future__ import annotations

import math

from chatcli.engine.loop_watch import watch_loops
from chatcli.engine.params import SamplingParams
from chatcli.tui.widgets.transcript import Note
from tests.fake_engine import EOS, VOCAB, FakeEngine
from tests.tui_support import build_app, check_snapshot, ready, run, screen_text, send, until_idle, wait_for

LOOP = [VOCAB.index(w) for w in (" we", " go", " again", "!")]  # " we go again! we go again! ..."
GREEDY = SamplingParams(temperature=0, max_tokens=64)


class LoopingFake(FakeEngine):
    """The fake engine, certain of " we go again!" over and over; its stream watched for loops as the
    local engine's is."""

    def chat(self, messages, params, cancel=None, answer_prefix_ids=()):
        return watch_loops(super().chat(messages, params, cancel, answer_prefix_ids), params, answer_prefix_ids)

    def _raw_distribution(self, key, ids):
        after = LOOP[(LOOP.index(ids[-1]) + 1) % len(LOOP)] if ids and ids[-1] in LOOP else LOOP[0]
        if len(ids) >= self.length:
            after = EOS
        logits = [8.0 if i == after else 0.0 for i in range(len(VOCAB))]
        z = sum(math.exp(x) for x in logits)
        return [math.exp(x) / z for x in logits]


def loop_notes(app) -> list[str]:
    return [n.plain for n in app.query(Note) if "repeats itself" in n.plain]


def test_the_warning_shows_while_the_answer_streams_and_the_answer_goes_on():
    async def go():
        engine = LoopingFake(length=40)
        engine.hold_at = 20  # the answer waits after 20 steps (the loop shows at step 12) until released
        app = build_app(engine, params=GREEDY)
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            await send(pilot, "Say it again")
            await wait_for(pilot, lambda: loop_notes(app), what="the loop warning")
            assert app.busy  # still streaming: the warning stopped nothing
            engine.release.set()
            await until_idle(pilot)
            [note] = loop_notes(app)
            assert note == ('the answer repeats itself: " we go again!" ×3 from token 1; greedy decoding loops easily: '
                            "/set temperature 0.7 samples instead, or /set repetition_penalty 1.2 makes repeated tokens less likely")
            assert [n for n in app.query(Note) if "repeats itself" in n.plain][0].has_class("-warning")
            leaf = app.core.conv.leaf
            assert leaf.status == "stop" and len(leaf.steps) == 40  # the whole answer, as without the warning

    run(go())


def test_snapshot_loop_warning_80x24():
    async def go():
        app = build_app(LoopingFake(length=24, report_speed=42.0), params=GREEDY)
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(pilot)
            await send(pilot, "Say it again")
            await until_idle(pilot)
            await pilot.pause(0.1)
            check_snapshot("loop_warning_80x24", screen_text(app))

    run(go())
