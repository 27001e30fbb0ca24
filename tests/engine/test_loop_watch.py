"""Loop warnings from the engine: a tiny model forced into a 5-token cycle (tests/looping.py), streamed and batched."""

from __future__ import annotations

import time

import pytest

from chatcli.engine.events import Done, Notice, Step
from chatcli.engine.generate import Generator
from chatcli.engine.loop_watch import loop_message, loop_notice, watch_loops
from chatcli.engine.params import SamplingParams
from chatcli.engine.probes.repeats import Repeat
from chatcli.hub.checkpoint import load_checkpoint
from chatcli.tokenizer.tokenizer import ChatTokenizer
from tests.looping import CYCLE, make_looping_checkpoint

GREEDY = SamplingParams(temperature=0, max_tokens=30)


@pytest.fixture(scope="module")
def looping(tmp_path_factory):
    path = make_looping_checkpoint(tmp_path_factory.mktemp("tiny_loop"))
    return load_checkpoint(path), ChatTokenizer.from_dir(path)


@pytest.fixture
def gen(looping) -> Generator:
    model, tok = looping
    return Generator(model, tok)


def test_a_looping_answer_gets_one_loop_notice_right_after_the_step_that_shows_it(gen, looping):
    _, tok = looping
    events = list(gen.stream([CYCLE[0]], GREEDY, eos_ids=()))
    steps = [e for e in events if isinstance(e, Step)]
    notices = [(i, e) for i, e in enumerate(events) if isinstance(e, Notice)]
    assert [s.id for s in steps[:10]] == (CYCLE[1:] + CYCLE[:1]) * 2  # the model does loop
    assert len(steps) == 30 and isinstance(events[-1], Done) and events[-1].finish_reason == "length"
    assert len(notices) == 1
    where, notice = notices[0]
    assert notice.kind == "loop"
    # The 4-gram c1..c4 completes its third copy at step 13 (copies at 0, 5, 10): the notice follows it.
    assert events[where - 1] is steps[13]
    unit = CYCLE[1:] + CYCLE[:1]
    assert notice.data["text"] == "".join(s.text for s in steps[:5]) == tok.decode(unit)
    assert notice.data["start"] == 0 and notice.data["tokens"] == 5 and notice.data["copies"] == 3
    assert notice.data["at"] == 13 and notice.data["seq"] == 0 and notice.data["greedy"] is True
    assert notice.data["suggest"] == {"repetition_penalty": 1.2, "temperature": 0.7}
    assert "/set repetition_penalty 1.2" in notice.message and "/set temperature 0.7" in notice.message
    assert "×3 from token 1" in notice.message


def test_the_steps_are_the_same_with_the_watch(gen, looping):
    model, tok = looping
    watched = [e for e in gen.stream([CYCLE[0]], GREEDY, eos_ids=()) if isinstance(e, Step)]
    bare = [e for e in Generator(model, tok)._stream([CYCLE[0]], GREEDY, None, (), 256, []) if isinstance(e, Step)]
    assert [(s.id, s.text, s.prob) for s in watched] == [(s.id, s.text, s.prob) for s in bare]


def test_each_sequence_of_a_batch_gets_its_own_notice(gen):
    events = list(gen.stream_batch([CYCLE[0]], GREEDY, 2, eos_ids=()))
    notices = [e for e in events if isinstance(e, Notice)]
    assert sorted(n.data["seq"] for n in notices) == [0, 1]
    assert all(n.kind == "loop" for n in notices)


def test_a_continued_answer_that_already_looped_is_not_warned_again(gen):
    prefix = (CYCLE[1:] + CYCLE[:1]) * 3  # the answer so far: three copies already
    events = list(gen.stream([CYCLE[0]], GREEDY, eos_ids=(), answer_prefix=prefix))
    assert not any(isinstance(e, Notice) for e in events)


def test_a_continued_answer_counts_its_earlier_tokens(gen):
    prefix = CYCLE[1:] + CYCLE[:1]  # one copy so far: the warning comes on the new steps, indices count the prefix
    events = list(gen.stream([CYCLE[0]], GREEDY, eos_ids=(), answer_prefix=prefix))
    notices = [e for e in events if isinstance(e, Notice)]
    assert len(notices) == 1 and notices[0].data["start"] == 0 and notices[0].data["at"] == 13


def test_sampling_suggests_the_penalty_only_and_a_set_penalty_a_stronger_one():
    repeat = Repeat(start=4, ids=(1, 2, 3, 4), text="la la\n", copies=3, at=15)
    sampled = loop_notice(repeat, SamplingParams(temperature=0.7))
    assert sampled.data["greedy"] is False and sampled.data["suggest"] == {"repetition_penalty": 1.2}
    assert sampled.message == 'the answer repeats itself: "la la\\n" ×3 from token 5; /set repetition_penalty 1.2 makes repeated tokens less likely'
    stronger = loop_notice(repeat, SamplingParams(temperature=0.7, repetition_penalty=1.3))
    assert stronger.data["suggest"] == {"repetition_penalty": 1.4}
    assert loop_notice(repeat, SamplingParams(temperature=1.0, top_k=1)).data["greedy"] is True


def test_the_command_line_wording_uses_flags():
    repeat = Repeat(start=0, ids=(1,), text="the ", copies=12, at=11)
    data = loop_notice(repeat, SamplingParams(temperature=0)).data
    text = loop_message(data, cli=True)
    assert "--temperature 0.7" in text and "--repetition-penalty 1.2" in text and "/set" not in text
    assert '"the " ×12 from token 1' in text


def test_long_text_is_cut_on_one_line():
    repeat = Repeat(start=0, ids=tuple(range(30)), text="word " * 30, copies=3, at=70)
    message = loop_notice(repeat, SamplingParams()).message
    assert "\n" not in message and "…" in message


def test_closing_the_watched_stream_closes_the_engines_stream():
    closed = []

    def engine_stream():
        try:
            for i in range(100):
                yield Step(i, 7, "x", "x", 1.0, 1.0, 0.0, ())
        finally:
            closed.append(True)

    watched = watch_loops(engine_stream(), SamplingParams())
    next(watched)
    watched.close()
    assert closed == [True]


def test_the_watch_costs_microseconds_per_token():
    steps = [Step(i, (i * 7919) % 49_152, "x", "x", 1.0, 1.0, 0.0, ()) for i in range(20_000)]
    t = time.perf_counter()
    for _ in watch_loops(iter(steps), SamplingParams()):
        pass
    per_token = (time.perf_counter() - t) / len(steps)
    assert per_token < 50e-6, f"{per_token * 1e6:.1f} µs per token"
