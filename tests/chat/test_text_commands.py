"""/tokenize and /complete on a real tiny model through the plain REPL: what they print is what the
tokenizer and a plain continuation give; a server and bad use are one line."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from rich.console import Console

from chatcli.chat.core import ChatCore
from chatcli.chat.repl import Repl
from chatcli.chat.printed_steps import show_token
from chatcli.chat.text_commands import COMPLETE_TOKENS, completion_view
from chatcli.engine.events import Done, Step
from chatcli.engine.params import SamplingParams
from chatcli.engine.protocol import Capabilities
from chatcli.tokenizer.pieces import tokenize_pieces
from tests.fake_engine import FakeEngine

GREEDY = SamplingParams(temperature=0.0, max_tokens=200, seed=1)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from chatcli.engine.loader import load_engine

    return load_engine(str(tiny_model_dir), device="cpu")


def _run(engine, lines: list[str]):
    out, err = io.StringIO(), io.StringIO()
    core = ChatCore(engine, params=GREEDY)
    repl = Repl(core, console=Console(file=out, width=120, color_system=None, highlight=False),
                err=Console(file=err, width=200, color_system=None), interactive=False)  # fmt: skip
    for line in lines:
        repl.handle(line)
    return repl.failures, out.getvalue(), err.getvalue(), core


def test_tokenize_prints_every_piece_the_tokenizer_makes(engine):
    text = "Hi 2024 今天"
    rc, out, err, _ = _run(engine, [f"/tokenize {text}"])
    assert rc == 0, err
    pieces = tokenize_pieces(engine.tokenizer, text)
    assert f"{len(pieces)} tokens, {len(text)} characters, {len(text.encode())} bytes" in out
    for p in pieces:
        assert p.bytes.hex(" ") in out and str(p.id) in out and show_token(p.token) in out


def test_complete_shows_the_plain_continuation_and_leaves_the_conversation_alone(engine):
    text = "The capital of France is"
    rc, out, err, core = _run(engine, [f"/complete {text}"])
    assert rc == 0, err
    steps = [e for e in engine.complete(text, GREEDY.with_(max_tokens=COMPLETE_TOKENS)) if isinstance(e, Step)]
    assert 0 < len(steps) <= COMPLETE_TOKENS  # capped, whatever the chat's max_tokens
    assert f"plain continuation, no chat template ({len(steps)} tokens, greedy)" in out
    flat = " ".join(out.split())
    assert " ".join((text + "".join(s.text for s in steps)).split()) in flat
    assert f"entropy {steps[0].entropy:.2f} bits" in out
    assert core.conv.is_empty()  # not part of the chat


def test_completion_view_lists_the_first_steps_alternatives():
    engine = FakeEngine(length=5)
    steps = [e for e in engine.complete("x", GREEDY) if isinstance(e, Step)]
    buf = io.StringIO()
    Console(file=buf, width=200, color_system=None).print(completion_view("x", steps, Done("length", 1, 5, None, None), 0.7))
    out = buf.getvalue()
    assert "(5 tokens, temperature 0.7)" in out and "…" in out
    for t in steps[0].top[:5]:
        assert repr(t.token) in out


def test_tokenize_on_a_server_is_one_line(engine):
    remote = FakeEngine()
    remote.capabilities = replace(Capabilities(), backend="remote", weights_in_process=False)
    rc, out, err, _ = _run(remote, ["/tokenize hello"])
    assert rc == 1 and "chatcli tokenize TEXT --model NAME" in err and len(err.strip().splitlines()) == 1


def test_without_text_they_say_their_usage(engine):
    rc, out, err, _ = _run(engine, ["/complete", "/tokenize"])
    assert rc == 2 and "usage: /complete TEXT" in err and "usage: /tokenize TEXT" in err
