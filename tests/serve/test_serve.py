"""chatcli serve with the official openai client: answers, streams, logprobs, stop, seeds, n, errors."""

from __future__ import annotations

import math

import openai
import pytest

from chatcli.engine.params import SamplingParams
from tests.serve_support import HELLO, MODEL_ID, client, greedy, post, reference


def test_models_lists_the_base_model_by_its_name(server):
    models = client(server).models.list().data
    assert [m.id for m in models] == [MODEL_ID]
    assert models[0].owned_by == "chatcli" and models[0].max_model_len == 256


def test_chat_answer_and_logprobs_are_the_engines(server, ref):
    steps, done = reference(ref.chat(HELLO, greedy(12, top_n=3)))
    r = client(server).chat.completions.create(
        model=MODEL_ID, messages=HELLO, temperature=0, max_tokens=12, logprobs=True, top_logprobs=3
    )
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == done.text
    assert choice.finish_reason == done.finish_reason
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (done.prompt_tokens, done.completion_tokens)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == MODEL_ID
    got = choice.logprobs.content
    assert [e.token for e in got] == [s.token for s in steps]
    for e, s in zip(got, steps):
        # Raw model probabilities (temperature 1), as vLLM reports by default.
        assert math.exp(e.logprob) == pytest.approx(s.model_prob, abs=1e-5)
        assert bytes(e.bytes) == ref.tokenizer.token_bytes(s.id)
        assert [t.token for t in e.top_logprobs] == [t.token for t in s.top]
        assert [math.exp(t.logprob) for t in e.top_logprobs] == pytest.approx([t.model_prob for t in s.top], abs=1e-5)


def test_logprobs_stay_raw_under_sampling_parameters(server, ref):
    params = SamplingParams(temperature=0.5, top_k=3, seed=11, max_tokens=6, top_n=2)
    steps, done = reference(ref.chat(HELLO, params))
    r = client(server).chat.completions.create(model=MODEL_ID, messages=HELLO, temperature=0.5, max_tokens=6,
                                               seed=11, logprobs=True, top_logprobs=2, extra_body={"top_k": 3})  # fmt: skip
    assert r.choices[0].message.content == done.text
    assert [math.exp(e.logprob) for e in r.choices[0].logprobs.content] == pytest.approx(
        [s.model_prob for s in steps], abs=1e-5)  # fmt: skip


def test_stream_equals_the_whole_answer(server):
    c = client(server)
    whole = c.chat.completions.create(model=MODEL_ID, messages=HELLO, temperature=0, max_tokens=10, logprobs=True)
    chunks = list(c.chat.completions.create(model=MODEL_ID, messages=HELLO, temperature=0, max_tokens=10, logprobs=True,
                                            stream=True, stream_options={"include_usage": True}))  # fmt: skip
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(ch.object == "chat.completion.chunk" and ch.id == chunks[0].id for ch in chunks)
    body = [ch for ch in chunks if ch.choices]
    assert "".join(ch.choices[0].delta.content or "" for ch in body) == whole.choices[0].message.content
    streamed = [e.logprob for ch in body if ch.choices[0].logprobs for e in ch.choices[0].logprobs.content]
    assert streamed == pytest.approx([e.logprob for e in whole.choices[0].logprobs.content])
    assert body[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert not chunks[-1].choices and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(ch.usage is None for ch in chunks[:-1])


def test_completions_legacy_logprobs(server, ref):
    steps, done = reference(ref.complete("The quick brown", greedy(8, top_n=2)))
    c = client(server)
    r = c.completions.create(model=MODEL_ID, prompt="The quick brown", temperature=0, max_tokens=8, logprobs=2)
    choice = r.choices[0]
    assert r.object == "text_completion" and choice.text == done.text and choice.finish_reason == done.finish_reason
    lp = choice.logprobs
    assert lp.tokens == [s.token for s in steps]
    assert [math.exp(x) for x in lp.token_logprobs] == pytest.approx([s.model_prob for s in steps], abs=1e-5)
    for top, s in zip(lp.top_logprobs, steps):
        assert s.token in top and len(top) <= 3  # the chosen token is always there: up to k + 1
    assert lp.text_offset == [sum(len(x.text) for x in steps[:i]) for i in range(len(steps))]
    streamed = list(c.completions.create(model=MODEL_ID, prompt="The quick brown", temperature=0, max_tokens=8,
                                         logprobs=2, stream=True))  # fmt: skip
    assert "".join(ch.choices[0].text for ch in streamed) == done.text
    assert [o for ch in streamed if ch.choices[0].logprobs for o in ch.choices[0].logprobs.text_offset] == lp.text_offset


def test_completions_default_to_16_tokens(server):
    r = client(server).completions.create(model=MODEL_ID, prompt="The quick brown", temperature=0)
    assert r.usage.completion_tokens <= 16 and (r.usage.completion_tokens == 16 or r.choices[0].finish_reason == "stop")


def test_stop_string_ends_the_answer_before_it(server, ref):
    _, full = reference(ref.chat(HELLO, greedy(16)))
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 2]
    assert stop.strip() and stop in full.text
    r = client(server).chat.completions.create(model=MODEL_ID, messages=HELLO, temperature=0, max_tokens=16, stop=[stop])
    assert r.choices[0].message.content == full.text[: full.text.index(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_same_seed_same_tokens(server):
    c = client(server)

    def answer(seed: int) -> str:
        return c.chat.completions.create(model=MODEL_ID, messages=HELLO, temperature=1.0, max_tokens=16,
                                         seed=seed).choices[0].message.content  # fmt: skip

    first = answer(7)
    assert answer(7) == first
    assert answer(8) != first or answer(9) != first


def test_n_answers_come_from_the_engines_batch(server, ref):
    params = SamplingParams(temperature=1.0, seed=5, max_tokens=8, top_n=0)
    texts = {}
    for ev in ref.chat_batch(HELLO, params, 3):
        if type(ev).__name__ == "Done":
            texts[ev.seq] = ev.text
    c = client(server)
    r = c.chat.completions.create(model=MODEL_ID, messages=HELLO, temperature=1.0, seed=5, max_tokens=8, n=3)
    assert [ch.index for ch in r.choices] == [0, 1, 2]
    assert [ch.message.content for ch in r.choices] == [texts[0], texts[1], texts[2]]
    streamed = {0: "", 1: "", 2: ""}
    for chunk in c.chat.completions.create(model=MODEL_ID, messages=HELLO, temperature=1.0, seed=5, max_tokens=8, n=3,
                                           stream=True):  # fmt: skip
        for ch in chunk.choices:
            streamed[ch.index] += ch.delta.content or ""
    assert streamed == texts


@pytest.mark.parametrize(
    "change, param",
    [
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"n": 0}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"stop": [""]}, "stop"),
        ({"seed": "x"}, "seed"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages[0].content"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"model": None}, "model"),
    ],
)
def test_bad_parameters_are_400_with_the_parameter_named(server, change, param):
    status, body = post(server, "/chat/completions", {"model": MODEL_ID, "messages": HELLO, **change})
    assert status == 400, body
    assert body["error"]["param"] == param and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"] and "Traceback" not in body["error"]["message"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_malformed_json_is_400(server, raw):
    status, body = post(server, "/chat/completions", raw)
    assert status == 400 and set(body["error"]) == {"message", "type", "param", "code"}


def test_unknown_model_is_404_through_the_client(server):
    with pytest.raises(openai.NotFoundError) as e:
        client(server).chat.completions.create(model="gpt-9", messages=HELLO)
    assert e.value.body["code"] == "model_not_found" and MODEL_ID in e.value.body["message"]


def test_prompt_larger_than_the_context_is_400(server):
    long = [{"role": "user", "content": "The quick brown fox jumps. " * 80}]
    status, body = post(server, "/chat/completions", {"model": MODEL_ID, "messages": long})
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"
    assert "256" in body["error"]["message"]
    status, body = post(server, "/chat/completions", {"model": MODEL_ID, "messages": HELLO, "max_tokens": 250})
    assert status == 400 and body["error"]["param"] == "max_tokens"
    status, body = post(server, "/completions", {"model": MODEL_ID, "prompt": "fox " * 300})
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"


def test_unknown_route_is_a_json_404(server):
    status, body = post(server, "/embeddings", {"model": MODEL_ID, "input": "x"})
    assert status == 404 and "error" in body


def test_server_still_answers_after_errors(server, ref):
    _, done = reference(ref.chat(HELLO, greedy(4)))
    r = client(server).chat.completions.create(model=MODEL_ID, messages=HELLO, temperature=0, max_tokens=4)
    assert r.choices[0].message.content == done.text


def test_top_logprobs_gives_as_many_alternatives_as_asked(server):
    r = client(server).chat.completions.create(model=MODEL_ID, messages=HELLO, temperature=0, max_tokens=2,
                                               logprobs=True, top_logprobs=20)  # fmt: skip
    entries = r.choices[0].logprobs.content
    assert [len(e.top_logprobs) for e in entries] == [20, 20]
    probs = [math.exp(t.logprob) for t in entries[0].top_logprobs]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
