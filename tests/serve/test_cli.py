"""``chatcli serve`` on the command line: flag checks before any model load, and a real server
process with an API key (401 without it, answers with it, the key never in its logs)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import openai
import pytest

from chatcli.serve.server import is_loopback
from tests.cli_support import run as cli_run

KEY = "sk-test-0123456789abcdef"


def run(capsys, *argv):
    """(exit code, stderr) of ``chatcli *argv`` in process: these checks read only stderr."""
    code, _, err = cli_run(capsys, *argv)
    return code, err


def test_a_public_host_needs_an_api_key(capsys):
    code, err = run(capsys, "serve", "--host", "0.0.0.0", "--model", "/nonexistent")
    assert code == 2 and "--api-key-env" in err and err.count("\n") == 1


def test_the_key_variable_must_be_set(capsys, monkeypatch):
    monkeypatch.delenv("CHATCLI_NO_SUCH_KEY", raising=False)
    code, err = run(capsys, "serve", "--api-key-env", "CHATCLI_NO_SUCH_KEY", "--model", "/nonexistent")
    assert code == 2 and "CHATCLI_NO_SUCH_KEY" in err


def test_adapter_dirs_must_exist(capsys, tmp_path):
    code, err = run(capsys, "serve", "--adapter-dir", str(tmp_path / "nope"), "--model", "/nonexistent")
    assert code == 2 and "--adapter-dir" in err


def test_quantize_is_checked_before_loading_and_reaches_the_loader(capsys, monkeypatch):
    code, err = run(capsys, "serve", "--quantize", "int3", "--model", "/nonexistent")
    assert code == 2 and "invalid --quantize 'int3'" in err and err.count("\n") == 1
    seen = {}

    def fake_load(model, **kw):
        seen.update(kw)
        raise SystemExit(0)  # stop before a server starts

    monkeypatch.setattr("chatcli.engine.loader.load_engine", fake_load)
    code, _ = run(capsys, "serve", "--quantize", "int4", "--model", "/nonexistent")
    assert code == 0 and seen["quantize"] == "int4"


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                            ("127.1.2.3", True), ("0.0.0.0", False), ("192.168.1.5", False)])  # fmt: skip
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_served_process_checks_the_key_and_never_logs_it(tiny_model_dir, tmp_path):
    port = _free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "CHATCLI_TEST_KEY": KEY}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatcli", "serve", "--model", str(tiny_model_dir), "--port", str(port),
             "--api-key-env", "CHATCLI_TEST_KEY", "--device", "cpu", "--log-level", "debug"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "chatcli serve did not start"
                time.sleep(0.2)
        base = f"http://127.0.0.1:{port}/v1"
        messages = [{"role": "user", "content": "Hi"}]
        for wrong in ("", "sk-wrong"):
            c = openai.OpenAI(base_url=base, api_key=wrong or "none", max_retries=0)
            with pytest.raises(openai.AuthenticationError):
                c.chat.completions.create(model=str(tiny_model_dir), messages=messages, max_tokens=2)
        c = openai.OpenAI(base_url=base, api_key=KEY, max_retries=0)
        assert [m.id for m in c.models.list().data] == [str(tiny_model_dir)]
        r = c.chat.completions.create(model=str(tiny_model_dir), messages=messages, max_tokens=3, temperature=0)
        assert r.choices[0].finish_reason in ("stop", "length")
    finally:
        proc.terminate()
        proc.wait(30)
    text = log.read_text()
    assert "API key required" in text and "POST /v1/chat/completions" in text
    assert KEY not in text


def test_an_empty_served_model_name_is_refused_before_loading(capsys):
    code, err = run(capsys, "serve", "--served-model-name", " ", "--model", "/nonexistent")
    assert code == 2 and "--served-model-name" in err and err.count("\n") == 1


def test_served_process_answers_under_its_served_name_with_tokenize_and_echo(tiny_model_dir, tmp_path):
    port = _free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatcli", "serve", "--model", str(tiny_model_dir), "--port", str(port),
             "--served-model-name", "org/tiny", "--served-model-name", "tiny", "--device", "cpu"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "chatcli serve did not start"
                time.sleep(0.2)
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        assert [m.id for m in c.models.list().data] == ["org/tiny", "tiny"]
        with pytest.raises(openai.NotFoundError):  # the path it was loaded from is not one of its names
            c.completions.create(model=str(tiny_model_dir), prompt="Hi", max_tokens=1)
        r = c.completions.create(model="tiny", prompt="Hi there", max_tokens=0, echo=True, logprobs=1)
        assert r.choices[0].text == "Hi there" and r.choices[0].logprobs.token_logprobs[0] is None
        req = urllib.request.Request(f"http://127.0.0.1:{port}/tokenize", method="POST",
                                     data=b'{"model": "org/tiny", "prompt": "Hi there"}',
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=30) as reply:
            assert json.loads(reply.read())["count"] == len(r.choices[0].logprobs.tokens)
    finally:
        proc.terminate()
        proc.wait(30)
    assert "serving " + str(tiny_model_dir) + " as org/tiny, tiny at" in log.read_text()
