"""A client that closes its connection mid-stream stops its generation; the next request is served."""

from __future__ import annotations

import time

import pytest

from chatcli.engine.events import Done
from tests.serve_support import HELLO, MODEL_ID, client, served, tiny_engine
from tests.tiny import make_tiny_checkpoint

MAX_TOKENS = 3000


class Recording:
    """The engine, with every Done it yields recorded (the server sees the same engine)."""

    def __init__(self, engine):
        self._engine = engine
        self.dones: list[Done] = []
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def chat(self, *args, **kwargs):
        self.calls += 1
        for ev in self._engine.chat(*args, **kwargs):
            if isinstance(ev, Done):
                self.dones.append(ev)
            yield ev


@pytest.fixture(scope="module")
def long_context_model(tmp_path_factory):
    # A long context, so an uncancelled answer would run for seconds.
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_long"), family="llama", seed=0, max_position_embeddings=4096)


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_closing_the_stream_cancels_the_generation(long_context_model):
    engine = Recording(tiny_engine(long_context_model))
    with served(engine) as server:
        c = client(server)
        stream = c.chat.completions.create(model=MODEL_ID, messages=HELLO, temperature=0, max_tokens=MAX_TOKENS,
                                           stream=True)  # fmt: skip
        received = 0
        for chunk in stream:
            received += 1
            if received == 5:
                break
        stream.close()
        wait_for(lambda: engine.dones)
        done = engine.dones[0]
        assert done.finish_reason == "cancelled"
        print(f"cancelled after {done.completion_tokens} of {MAX_TOKENS} tokens")
        assert done.completion_tokens < MAX_TOKENS
        # The engine is free again: the next request gets its answer.
        r = c.chat.completions.create(model=MODEL_ID, messages=HELLO, temperature=0, max_tokens=3)
        assert r.choices[0].finish_reason == "length" and engine.dones[-1].finish_reason == "length"


def test_a_queued_request_whose_client_left_is_skipped(long_context_model):
    import openai

    engine = Recording(tiny_engine(long_context_model))
    with served(engine) as server:
        running = client(server).chat.completions.create(model=MODEL_ID, messages=HELLO, temperature=0,
                                                         max_tokens=MAX_TOKENS, stream=True)  # fmt: skip
        next(iter(running))  # the long answer holds the engine
        impatient = client(server, timeout=0.5)
        with pytest.raises(openai.APITimeoutError):
            impatient.chat.completions.create(model=MODEL_ID, messages=HELLO, temperature=0, max_tokens=5)
        time.sleep(1.0)  # let the server see that client go
        running.close()
        wait_for(lambda: engine.dones)
        r = client(server).chat.completions.create(model=MODEL_ID, messages=HELLO, temperature=0, max_tokens=3)
        assert r.choices[0].finish_reason == "length"
        # The long answer and the last request ran; the abandoned one never reached the engine.
        assert engine.calls == 2 and [d.finish_reason for d in engine.dones] == ["cancelled", "length"]
