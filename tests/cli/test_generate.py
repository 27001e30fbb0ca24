"""`chatcli generate` end to end on a tiny model: JSONL schema, flags, exit codes, one-line errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from tests.cli_support import run as cli_run


def run(capsys, *argv, stdin: str | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return cli_run(capsys, *argv)


def jsonl(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_json_schema(capsys, tiny_model_dir):
    code, out, err = run(capsys, "generate", "Paris is", "--model", str(tiny_model_dir),
                         "--json", "--max-tokens", "8", "--seed", "3", "--top", "3")
    assert code == 0, err
    objs = jsonl(out)
    meta, steps, done = objs[0], objs[1:-1], objs[-1]
    assert meta["type"] == "meta" and meta["seed"] == 3 and meta["dtype"] == "float32"
    assert meta["params"]["top_n"] == 3 and len(meta["model_sha256"]) == 64
    assert {"model", "chatcli_version"} <= meta.keys()
    assert done["type"] == "done" and done["completion_tokens"] == len(steps)
    assert done["finish_reason"] in ("stop", "length") and done["prompt_tokens"] > 0
    assert done["ttft_s"] >= 0
    for i, s in enumerate(steps):
        assert s["type"] == "step" and s["index"] == i
        assert set(s) >= {"id", "token", "text", "prob", "model_prob", "entropy", "top"}
        assert 0 < s["prob"] <= 1 and 0 < s["model_prob"] <= 1 and s["entropy"] >= 0
        assert len(s["top"]) == 3
        probs = [t["model_prob"] for t in s["top"]]
        assert probs == sorted(probs, reverse=True)
        for t in s["top"]:
            assert set(t) == {"id", "token", "prob", "model_prob"}
            if t["id"] == s["id"]:
                assert t["model_prob"] == pytest.approx(s["model_prob"])


def test_greedy_is_deterministic_and_prob_is_one(capsys, tiny_model_dir):
    args = ("generate", "hello", "--model", str(tiny_model_dir), "--json", "-n", "6", "--temperature", "0")
    _, out1, _ = run(capsys, *args)
    _, out2, _ = run(capsys, *args, "--seed", "99")
    ids1 = [o["id"] for o in jsonl(out1) if o["type"] == "step"]
    ids2 = [o["id"] for o in jsonl(out2) if o["type"] == "step"]
    assert ids1 == ids2 and ids1
    assert all(o["prob"] == 1.0 for o in jsonl(out1) if o["type"] == "step")


def test_same_seed_same_text(capsys, tiny_model_dir):
    args = ("generate", "The river", "--model", str(tiny_model_dir), "-n", "12", "--temperature", "1.2", "--seed", "7")
    assert run(capsys, *args)[1] == run(capsys, *args)[1]


@pytest.mark.parametrize(
    "flag,value",
    [("--temperature", "-1"), ("--temperature", "nan"), ("--top-p", "0"), ("--top-p", "1.5"),
     ("--top-k", "-1"), ("--min-p", "1.5"), ("--max-tokens", "0"), ("--threads", "0")],
)
def test_invalid_values_exit_2_with_one_line(capsys, tiny_model_dir, flag, value):
    code, out, err = run(capsys, "generate", "hi", "--model", str(tiny_model_dir), flag, value)
    assert code == 2
    assert out == "" and err.count("\n") == 1 and err.startswith("chatcli: error: ")


def test_unknown_option_is_one_line_usage_error(capsys):
    code, _, err = run(capsys, "generate", "hi", "--temprature", "1")
    assert code == 2 and err.count("\n") == 1 and "--temprature" in err


def test_missing_model_exits_1(capsys, tmp_path):
    code, _, err = run(capsys, "generate", "hi", "--model", str(tmp_path / "nope"))
    assert code == 1 and err.count("\n") == 1 and "nope" in err


def test_print_prompt_is_exact_and_loads_no_weights(capsys, tiny_model_dir, monkeypatch):
    import chatcli.hub.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "load_checkpoint", lambda *a, **k: pytest.fail("weights loaded"))
    code, out, _ = run(capsys, "generate", "Hi there", "--model", str(tiny_model_dir), "--print-prompt")
    assert code == 0
    assert out == (
        "<|im_start|>system\nYou are a tiny test model.<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    )
    code, out, _ = run(capsys, "generate", "Hi", "--model", str(tiny_model_dir), "--print-prompt", "--system", "")
    assert out.startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\nHi")


def test_stdin_prompt_and_raw(capsys, tiny_model_dir, monkeypatch):
    code, out, _ = run(capsys, "generate", "-", "--model", str(tiny_model_dir), "--print-prompt", "--raw",
                       stdin="def add(a, b):", monkeypatch=monkeypatch)
    assert code == 0 and out == "def add(a, b):"
    code, out, err = run(capsys, "generate", "def add(a, b):", "--raw", "--model", str(tiny_model_dir),
                         "-n", "5", "--temperature", "0")
    assert code == 0, err and out.strip()


def test_show_probs_prints_a_row_per_token(capsys, tiny_model_dir):
    code, out, _ = run(capsys, "generate", "hi", "--model", str(tiny_model_dir), "-n", "4",
                       "--temperature", "0", "--show-probs")
    assert code == 0
    assert "alternatives" in out and "H bits" in out


def test_python_dash_m_and_version():
    r = subprocess.run([sys.executable, "-m", "chatcli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("chatcli ")


def test_ctrl_c_ends_the_line_and_exits_130(capsys, tiny_model_dir, monkeypatch):
    from chatcli.engine.loader import LoadedModel

    real_chat = LoadedModel.chat

    def interrupted(self, *args, **kwargs):
        for i, event in enumerate(real_chat(self, *args, **kwargs)):
            yield event
            if i == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(LoadedModel, "chat", interrupted)
    code, out, err = run(capsys, "generate", "hi", "--model", str(tiny_model_dir), "--temperature", "0")
    assert code == 130
    assert out.endswith("\n") and err.strip().endswith("chatcli: interrupted")


def test_json_ctrl_c_still_prints_its_done_line_and_exits_130(tiny_model_dir):
    # SIGINT after the first step line: the engine stops at its next token, the done line says
    # "cancelled" with the steps printed so far, the exit code is 130 (README: the --json schema).
    import os
    import signal
    import threading
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    # Greedy on the tiny model runs ~118 tokens before its end-of-sequence: plenty of time to interrupt.
    proc = subprocess.Popen([sys.executable, "-m", "chatcli", "generate", "hello", "--model", str(tiny_model_dir),
                             "--json", "--temperature", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip
    try:
        head = [proc.stdout.readline(), proc.stdout.readline()]
        assert json.loads(head[1])["type"] == "step", head
        proc.send_signal(signal.SIGINT)
        # Read the rest through the same buffered file: communicate() reads the raw descriptor and
        # drops lines readline() already buffered (a second step that arrived with the first).
        killer = threading.Timer(60, proc.kill)
        killer.start()
        out, err = proc.stdout.read(), proc.stderr.read()
        proc.wait()
        killer.cancel()
    finally:
        proc.kill()
    objs = jsonl("".join(head) + out)
    steps = [o for o in objs if o["type"] == "step"]
    assert proc.returncode == 130, err
    assert objs[-1]["type"] == "done" and objs[-1]["finish_reason"] == "cancelled"
    assert objs[-1]["completion_tokens"] == len(steps) and [s["index"] for s in steps] == list(range(len(steps)))
    assert "Traceback" not in err and err.strip().endswith("chatcli: interrupted")


@pytest.mark.parametrize("source", ["stdin", "file", "argv"])
def test_prompt_bytes_that_are_not_utf8_become_replacement_characters(capsys, tiny_model_dir, monkeypatch, tmp_path,
                                                                      source):
    # A latin-1 "café": stdin and @FILE hold the raw byte, a non-UTF-8 argv reaches Python as a
    # surrogate escape. Each used to end in a traceback (decoding, or the tokenizer).
    arg = {"stdin": "-", "file": f"@{tmp_path / 'p.txt'}", "argv": "caf\udce9"}[source]
    (tmp_path / "p.txt").write_bytes(b"caf\xe9")
    for flags in (["--print-prompt"], ["--json", "-n", "2"]):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"caf\xe9"), encoding="utf-8"))  # strict
        code, out, err = run(capsys, "generate", arg, "--model", str(tiny_model_dir), *flags)
        assert code == 0, err
        assert err.count("not valid UTF-8") == 1 and "Traceback" not in err
        if flags == ["--print-prompt"]:
            assert "<|im_start|>user\ncaf\ufffd<|im_end|>" in out
        else:
            assert jsonl(out)[-1]["type"] == "done" and jsonl(out)[-1]["prompt_tokens"] > 0
