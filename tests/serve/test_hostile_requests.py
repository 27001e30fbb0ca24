"""Hostile requests get OpenAI's 400 error object, failures nobody expected a JSON 500, and in
every case the kept-alive connection answers the next, normal request."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from chatcli.serve import openai_format
from chatcli.serve.server import BackgroundServer, build
from tests.serve_support import HELLO, MODEL_ID, tiny_engine

KEY = "sk-test-key-that-must-never-be-logged"
SECRET = "SECRET-PROMPT-TEXT"
JSON = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}


def _body(**fields) -> bytes:
    return json.dumps({"model": MODEL_ID, "messages": HELLO, **fields}).encode()


def _user(content_json: bytes) -> bytes:
    """A chat body whose one user message has ``content_json`` (raw JSON text) as content."""
    return b'{"model": "tiny", "messages": [{"role": "user", "content": ' + content_json + b"}]}"


def _nested(levels: int):
    return json.loads("[" * levels + "]" * levels)


# name -> (route, raw body, the param the error names)
HOSTILE = {
    "nested_100000_deep": ("/chat/completions", b'{"model": "tiny", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None),
    "nested_65_deep": ("/chat/completions", _body(extra=_nested(64)), None),  # 64 inside the body's object
    "lone_surrogate_content": ("/chat/completions", _user(b'"\\ud83d"'), "messages[0].content"),
    "lone_surrogate_text_part": ("/chat/completions", _user(b'[{"type": "text", "text": "ok \\udc00"}]'),
                                 "messages[0].content[0].text"),
    "lone_surrogate_stop": ("/chat/completions", _body(stop="\ud83d"), "stop"),
    "lone_surrogate_model": ("/chat/completions", b'{"model": "\\ud83d", "messages": []}', "model"),
    "lone_surrogate_prompt": ("/completions", b'{"model": "tiny", "prompt": "x\\ud83dy"}', "prompt"),
    "utf8_encoded_surrogate": ("/chat/completions", _user(b'"\xed\xa0\xbd"'), "messages[0].content"),  # CESU-8
    "invalid_utf8": ("/chat/completions", _user(b'"\xff"'), None),
    "unhashable_role": ("/chat/completions", _body(messages=[{"role": ["user"], "content": "x"}]), "messages[0]"),
    "integer_too_big_for_a_float": ("/chat/completions", _body(temperature=10**400), "temperature"),
    "integer_of_5000_digits": ("/chat/completions", b'{"model": "tiny", "n": ' + b"9" * 5000 + b"}", None),
}  # fmt: skip


@pytest.fixture(scope="module")
def app(tiny_model_dir):
    return build(tiny_engine(tiny_model_dir), model_id=MODEL_ID, adapter_dirs=[], api_key=KEY)


@pytest.fixture(scope="module")
def server(app):
    with BackgroundServer(app) as s:
        yield s


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.base_url, timeout=60, headers=JSON) as c:
        yield c


def _connection(response: httpx.Response):
    """The client side (address, port) of the connection that carried ``response``."""
    return response.extensions["network_stream"].get_extra_info("client_addr")


def _answers(http: httpx.Client) -> httpx.Response:
    r = http.post("/chat/completions", content=_body(max_tokens=2, temperature=0))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["role"] == "assistant"
    return r


def _error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and "\n" not in err["message"] and "Traceback" not in err["message"]
    return err


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_request_is_a_400_and_the_connection_still_answers(http, name):
    route, raw, param = HOSTILE[name]
    bad = http.post(route, content=raw)
    err = _error(bad, 400)
    assert err["type"] == "invalid_request_error" and err["param"] == param
    good = _answers(http)
    assert _connection(good) == _connection(bad)  # the same kept-alive connection


def test_64_levels_of_nesting_are_accepted(http):
    r = http.post("/chat/completions", content=_body(max_tokens=1, extra=_nested(63)))
    assert r.status_code == 200, r.text


def test_the_surrogate_error_names_the_message(http):
    err = _error(http.post("/chat/completions", content=_user(b'"ok"}, {"role": "user", "content": "\\ud83d"')), 400)
    assert err["param"] == "messages[1].content" and "surrogate" in err["message"]


def test_an_unexpected_failure_is_a_json_500_logged_without_the_request(app, http, monkeypatch, caplog):
    def broken(req):
        raise RuntimeError(f"tokenizer blew up on {req.messages[0]['content']}")

    monkeypatch.setattr(app.state.chatcli, "_prompt_ids", broken)
    caplog.set_level(logging.ERROR, logger="chatcli.serve")
    bad = http.post("/chat/completions", content=_body(messages=[{"role": "user", "content": SECRET}]))
    err = _error(bad, 500)
    assert err["type"] == "server_error" and "RuntimeError" in err["message"] and SECRET not in err["message"]
    assert "RuntimeError" in caplog.text and "broken" in caplog.text  # the type and where it happened
    assert SECRET not in caplog.text and KEY not in caplog.text
    monkeypatch.undo()
    assert _connection(_answers(http)) == _connection(bad)


def test_a_failure_mid_stream_ends_the_stream_properly(http, monkeypatch, caplog):
    def broken(self, step):
        raise RuntimeError(f"formatter blew up on {SECRET}")

    monkeypatch.setattr(openai_format.Formatter, "step_chunk", broken)
    caplog.set_level(logging.ERROR, logger="chatcli.serve")
    with http.stream("POST", "/chat/completions", content=_body(max_tokens=3, stream=True)) as r:
        assert r.status_code == 200
        events = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
        carried_by = _connection(r)
    assert events[-1] == "[DONE]"
    errors = [json.loads(e)["error"] for e in events[:-1] if "error" in json.loads(e)]
    assert len(errors) == 1 and errors[0]["type"] == "server_error" and SECRET not in errors[0]["message"]
    assert "RuntimeError" in caplog.text and SECRET not in caplog.text
    monkeypatch.undo()
    assert _connection(_answers(http)) == carried_by


def test_a_wrong_key_is_401_and_the_connection_still_answers(http):
    bad = http.post("/chat/completions", content=_body(), headers={"Authorization": "Bearer wrong"})
    assert _error(bad, 401)["code"] == "invalid_api_key"
    assert _connection(_answers(http)) == _connection(bad)


def test_an_oversized_body_is_a_413_declared_or_streamed(http, server):
    from chatcli.serve.app import MAX_BODY_BYTES

    big = _user(json.dumps("x" * (MAX_BODY_BYTES + 10)).encode())
    err = _error(http.post("/chat/completions", content=big), 413)
    assert "larger than" in err["message"]

    def chunks():  # no Content-Length: the cap applies while the body streams in
        for i in range(0, len(big), 2**20):
            yield big[i : i + 2**20]

    with httpx.Client(base_url=server.base_url, timeout=60, headers=JSON) as fresh:
        _error(fresh.post("/chat/completions", content=chunks()), 413)
    with httpx.Client(base_url=server.base_url, timeout=60, headers=JSON) as fresh:
        _answers(fresh)  # the server goes on
