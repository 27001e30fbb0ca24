"""`chatcli tokenize` and `chatcli score` on a tiny model."""

from __future__ import annotations

import json

from tests.cli_support import run


def test_tokenize_json(capsys, tiny_model_dir):
    code, out, _ = run(capsys, "tokenize", "Hello 7 🙂", "--model", str(tiny_model_dir), "--json")
    assert code == 0
    lines = [json.loads(x) for x in out.splitlines()]
    tokens, summary = lines[:-1], lines[-1]
    assert summary == {"type": "summary", "tokens": len(tokens), "characters": 9, "bytes": len("Hello 7 🙂".encode())}
    assert bytes.fromhex("".join(t["bytes"].replace(" ", "") for t in tokens)) == "Hello 7 🙂".encode()
    assert set(tokens[0]) == {"type", "index", "id", "token", "bytes", "start", "end", "special"}


def test_tokenize_chat_marks_special_tokens(capsys, tiny_model_dir):
    code, out, _ = run(capsys, "tokenize", "Hi", "--chat", "--model", str(tiny_model_dir), "--json")
    tokens = [json.loads(x) for x in out.splitlines()][:-1]
    specials = [t["token"] for t in tokens if t["special"]]
    assert specials[:2] == ["<|im_start|>", "<|im_end|>"] and code == 0


def test_score_human_and_json(capsys, tiny_model_dir):
    code, out, _ = run(capsys, "score", "The quick brown fox", "--model", str(tiny_model_dir))
    assert code == 0 and "perplexity" in out and "bits" in out
    code, out, _ = run(capsys, "score", "The quick brown fox", "--model", str(tiny_model_dir), "--json")
    lines = [json.loads(x) for x in out.splitlines()]
    summary = lines[-1]
    assert summary["type"] == "summary" and summary["scored_tokens"] == summary["tokens"] - 1
    assert summary["perplexity"] > 1
    assert lines[0]["prob"] is None and 0 < lines[1]["prob"] <= 1


def test_score_bad_top_is_usage_error(capsys, tiny_model_dir):
    code, _, err = run(capsys, "score", "x y", "--model", str(tiny_model_dir), "--top", "-2")
    assert code == 2 and err.count("\n") == 1
