"""End to end: chatcli serve on the real default model, one streamed greedy chat with logprobs.

Marked ``e2e`` (see tests/e2e_model.py for where the model comes from)."""

from __future__ import annotations

import math

import pytest

from tests.e2e_model import default_model_dir
from tests.serve_support import MODEL_ID, client, greedy, reference, served

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "What is the capital of France? Answer in one short sentence."}]


def test_streamed_greedy_answer_with_logprobs_is_the_engines(tmp_path_factory):
    from chatcli.engine.loader import load_engine

    engine = load_engine(str(default_model_dir(tmp_path_factory)))
    steps, done = reference(engine.chat(MESSAGES, greedy(20, top_n=3)))  # before serving: one user at a time
    with served(engine) as server:
        chunks = list(client(server).chat.completions.create(
            model=MODEL_ID, messages=MESSAGES, temperature=0, max_tokens=20, logprobs=True, top_logprobs=3,
            stream=True, stream_options={"include_usage": True}))  # fmt: skip
    body = [ch for ch in chunks if ch.choices]
    assert "".join(ch.choices[0].delta.content or "" for ch in body) == done.text
    assert "Paris" in done.text
    entries = [e for ch in body if ch.choices[0].logprobs for e in ch.choices[0].logprobs.content]
    assert [e.token for e in entries] == [s.token for s in steps]
    assert [math.exp(e.logprob) for e in entries] == pytest.approx([s.model_prob for s in steps], abs=1e-5)
    assert [[t.token for t in e.top_logprobs] for e in entries] == [[t.token for t in s.top] for s in steps]
    assert chunks[-1].usage.completion_tokens == done.completion_tokens
