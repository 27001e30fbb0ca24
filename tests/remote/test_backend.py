"""The remote backend against fake vLLM / llama.cpp servers: Steps, logprob mapping, errors."""

from __future__ import annotations

import math
import socket
import threading

import pytest

from chatcli.engine.protocol import capabilities
from chatcli.engine.events import Done, Notice, Step, text_token_id
from chatcli.engine.params import SamplingParams
from chatcli.errors import ChatcliError, UsageError
from chatcli.remote import connect
from chatcli.remote.client import DONE, iter_sse, split_endpoint
from tests.remote_fakes import ANSWER, FakeServer, expected_model_prob

MSGS = [{"role": "user", "content": "Capital of France?"}]
GREEDY = SamplingParams(temperature=0, seed=1, top_n=3)


def run(engine, params=GREEDY, messages=MSGS):
    events = list(engine.chat(messages, params))
    steps = [e for e in events if isinstance(e, Step)]
    notices = [e for e in events if isinstance(e, Notice)]
    done = events[-1]
    assert isinstance(done, Done) and sum(isinstance(e, Done) for e in events) == 1
    return steps, notices, done


def test_endpoint_forms():
    assert split_endpoint("http://h:8000") == ("http://h:8000", "http://h:8000/v1")
    assert split_endpoint("http://h:8000/v1/") == ("http://h:8000", "http://h:8000/v1")
    assert split_endpoint("https://h/api/v1") == ("https://h/api", "https://h/api/v1")
    for bad in ("h:8000", "ftp://h", "http://user:secret@h/v1"):
        with pytest.raises(UsageError) as e:
            split_endpoint(bad)
        assert "secret" not in e.value.message


def test_sse_parser_joins_data_lines_skips_comments_and_stops_at_done():
    lines = [": keep-alive", "event: message", 'data: {"a":', 'data: 1}', "", "id: 3", 'data: {"b": 2}', "",
             "data: [DONE]", "", 'data: {"never": 1}', ""]
    assert list(iter_sse(lines)) == [{"a": 1}, {"b": 2}, DONE]
    with pytest.raises(ChatcliError, match="error mid-stream: boom"):
        list(iter_sse(['data: {"error": {"message": "boom"}}', ""]))


def test_vllm_raw_logprobs_fill_model_prob_and_partial_alternatives():
    with FakeServer("vllm") as srv:
        engine = connect(srv.url, "fake-model")
        assert engine.identity.context_length == 4096 and engine.flavor == "vllm"
        steps, notices, done = run(engine)
    assert "".join(s.text for s in steps) == "".join(ANSWER) == done.text
    assert done.finish_reason == "stop" and done.completion_tokens == len(ANSWER) and done.prompt_tokens == 11
    assert not notices
    for i, s in enumerate(steps):
        assert s.index == i and s.partial
        assert s.model_prob == pytest.approx(expected_model_prob(i))
        assert math.isnan(s.prob)  # raw logprobs say nothing about the sampled distribution
        assert s.id == text_token_id(ANSWER[i]) < 0 and s.rank == 1
        assert len(s.top) == 3 and s.top[0].token == ANSWER[i]
        ps = [t.model_prob for t in s.top]
        assert ps == sorted(ps, reverse=True)
        assert s.entropy == pytest.approx(-sum(p * math.log2(p) for p in ps))
    js = steps[0].to_json()
    assert js["id"] is None and js["prob"] is None and js["partial"] is True
    assert js["model_prob"] == pytest.approx(expected_model_prob(0)) and js["top"][0]["id"] is None
    body = srv.requests[-1][1]
    assert body["stream"] and body["logprobs"] is True and body["top_logprobs"] == 3
    assert body["temperature"] == 0 and body["seed"] == 1 and body["model"] == "fake-model"
    assert "top_k" not in body and "repetition_penalty" not in body  # neutral values are not sent


def test_processed_mode_fills_prob_instead():
    with FakeServer("vllm") as srv:
        steps, _, _ = run(connect(srv.url, logprobs_mode="processed"))
    assert steps[0].prob == pytest.approx(expected_model_prob(0)) and math.isnan(steps[0].model_prob)
    assert steps[0].to_json()["model_prob"] is None


def test_llamacpp_ids_and_sampling_names():
    with FakeServer("llama.cpp") as srv:
        engine = connect(srv.url)  # no --model: the server's only model
        assert engine.identity.name == "fake-model" and engine.identity.context_length == 8192
        steps, _, done = run(engine, GREEDY.with_(repetition_penalty=1.2, top_k=5))
    assert done.finish_reason == "stop"
    assert all(s.id >= 100 and s.rank == 1 for s in steps)
    body = srv.requests[-1][1]
    assert body["repeat_penalty"] == 1.2 and body["top_k"] == 5


def test_no_logprobs_server_still_streams_text_and_says_why():
    with FakeServer("vllm", logprobs=False) as srv:
        steps, notices, done = run(connect(srv.url))
    assert "".join(s.text for s in steps) == "".join(ANSWER) and done.finish_reason == "stop"
    assert all(math.isnan(s.model_prob) and math.isnan(s.prob) and not s.top and not s.partial for s in steps)
    assert len(notices) == 1 and "no token probabilities" in notices[0].message
    assert steps[0].to_json()["model_prob"] is None and steps[0].to_json()["entropy"] is None


def test_raw_completion_and_length_finish():
    with FakeServer("vllm") as srv:
        events = list(connect(srv.url).complete("The capital of France", GREEDY.with_(max_tokens=3)))
    steps = [e for e in events if isinstance(e, Step)]
    assert [s.text for s in steps] == ANSWER[:3] and events[-1].finish_reason == "length"
    assert steps[1].model_prob == pytest.approx(expected_model_prob(1)) and steps[1].rank == 1
    path, body = srv.requests[-1]
    assert path == "/v1/completions" and body["prompt"] == "The capital of France" and body["logprobs"] == 3


def test_batch_sends_one_request_per_seed():
    with FakeServer("vllm") as srv:
        events = list(connect(srv.url).chat_batch(MSGS, GREEDY, 3, seeds=[7, 8, 9]))
    dones = [e for e in events if isinstance(e, Done)]
    assert [d.seq for d in dones] == [0, 1, 2] and all(d.text == "".join(ANSWER) for d in dones)
    assert [b["seed"] for p, b in srv.requests if p == "/v1/chat/completions"] == [7, 8, 9]


def test_cancel_stops_the_stream():
    cancel = threading.Event()
    with FakeServer("vllm") as srv:
        events = []
        for e in connect(srv.url).chat(MSGS, GREEDY, cancel=cancel):
            events.append(e)
            if isinstance(e, Step) and e.index == 1:
                cancel.set()
    assert events[-1].finish_reason == "cancelled" and events[-1].completion_tokens == 2


def test_remote_capabilities_are_declared_and_unsupported_features_say_so():
    with FakeServer("vllm") as srv:
        engine = connect(srv.url)
        caps = capabilities(engine)
        assert not caps.exact_prompt and not caps.prefix_continuation and not caps.weights_in_process
        with pytest.raises(UsageError, match="exact prompt is not available on a remote backend"):
            engine.render_prompt(MSGS)
        with pytest.raises(UsageError, match="not available on a remote backend"):
            list(engine.chat(MSGS, GREEDY, answer_prefix_ids=[1, 2]))


# --- errors: one clear line each, the key never in it -------------------------------------------


def test_cut_stream_ends_with_an_error_and_keeps_the_partial_answer():
    with FakeServer("vllm", cut_after=3) as srv:
        steps, _, done = run(connect(srv.url))
    assert [s.text for s in steps] == ANSWER[:3]
    assert done.finish_reason == "error" and done.text == "".join(ANSWER[:3])
    assert "mid-answer after 3 tokens" in done.error and "/retry" in done.error


def test_401_without_and_with_a_wrong_key(monkeypatch):
    with FakeServer("vllm", key="s3cret-key") as srv:
        with pytest.raises(ChatcliError) as e:
            connect(srv.url)
        assert "HTTP 401" in e.value.message and "--api-key-env" in e.value.message
        monkeypatch.setenv("MY_KEY", "wrong-key-123")
        with pytest.raises(ChatcliError) as e:
            connect(srv.url, api_key_env="MY_KEY")
        assert "HTTP 401" in e.value.message and "wrong-key-123" not in e.value.message
        monkeypatch.setenv("MY_KEY", "s3cret-key")
        steps, _, done = run(connect(srv.url, api_key_env="MY_KEY"))
        assert done.finish_reason == "stop"
        assert srv.headers[-1]["Authorization"] == "Bearer s3cret-key"
    monkeypatch.delenv("MY_KEY")
    with pytest.raises(UsageError, match="MY_KEY is empty or not set"):
        connect("http://127.0.0.1:9/v1", api_key_env="MY_KEY")


def test_429_shows_retry_after():
    with FakeServer("vllm", rate_limit=7) as srv:
        _, _, done = run(connect(srv.url))
    assert done.finish_reason == "error"
    assert "HTTP 429" in done.error and "retry after 7 s" in done.error


def test_slow_server_times_out_with_one_line():
    with FakeServer("vllm", delay=1.5) as srv:
        _, _, done = run(connect(srv.url, timeout=0.3))
    assert done.finish_reason == "error" and "sent nothing for 0.3 s (timeout)" in done.error


def test_server_down_and_wrong_url_and_unknown_model():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    with pytest.raises(ChatcliError, match="cannot reach .* is the server running"):
        connect(f"http://127.0.0.1:{port}/v1")
    with FakeServer("vllm") as srv:
        with pytest.raises(ChatcliError, match="HTTP 404.*check --endpoint"):
            connect(srv.url.removesuffix("/v1") + "/wrong")
        with pytest.raises(UsageError, match="no model 'nope'; it serves: fake-model"):
            connect(srv.url, "nope")
