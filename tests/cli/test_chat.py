"""``chatcli chat`` (plain mode, piped) and ``chatcli history`` through the real CLI on a tiny random model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def chatcli(*args: str, stdin: str = "", home: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if home is not None:
        env["CHATCLI_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "chatcli", *args], input=stdin, capture_output=True, text=True, timeout=120, env=env,
    )


@pytest.fixture(scope="module")
def chat_history(tiny_model_dir, tmp_path_factory):
    """One piped chat on the tiny model, saved in its own CHATCLI_HOME."""
    home = tmp_path_factory.mktemp("home")
    r = chatcli("chat", "--model", str(tiny_model_dir), "-t", "0", "-n", "8", "--system", "Be brief.",
                stdin="hello there\n/set max_tokens 5\nand again\n", home=home)
    return home, r


def test_piped_chat_answers_each_line_and_saves_it(chat_history, monkeypatch):
    home, r = chat_history
    monkeypatch.setenv("CHATCLI_HOME", str(home))
    assert r.returncode == 0, r.stderr
    assert "max_tokens = 5" in r.stderr
    listed = chatcli("history", "list", "--json")
    items = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(items) == 1 and items[0]["title"] == "hello there" and items[0]["messages"] == 4
    shown = chatcli("history", "show", str(items[0]["id"]), "--json")
    conv = json.loads(shown.stdout)
    answers = [m for m in conv["messages"] if m["role"] == "assistant"]
    assert conv["system"] == "Be brief." and conv["params"]["temperature"] == 0
    assert len(answers[0]["steps"]) <= 8 and len(answers[1]["steps"]) <= 5
    assert r.stdout.startswith(answers[0]["content"])  # what was printed is what was saved
    for a in answers:
        assert "".join(s["text"] for s in a["steps"]) == a["content"]
        assert all(s["top"] for s in a["steps"])
    md = chatcli("history", "show", str(items[0]["id"]))
    assert "## You" in md.stdout and "hello there" in md.stdout


def test_history_export_and_rm(chat_history, monkeypatch, tmp_path):
    home, _ = chat_history
    monkeypatch.setenv("CHATCLI_HOME", str(home))
    conv_id = json.loads(chatcli("history", "list", "--json").stdout.splitlines()[0])["id"]
    r = chatcli("history", "export", str(conv_id), str(tmp_path / "exp"))
    assert r.returncode == 0 and (tmp_path / "exp.md").exists() and json.loads((tmp_path / "exp.json").read_text())["id"] == conv_id
    bad = chatcli("history", "rm", "999")
    assert bad.returncode == 2 and bad.stderr.count("\n") <= 2 and "no conversation 999" in bad.stderr
    ok = chatcli("history", "rm", str(conv_id))
    assert ok.returncode == 0 and "removed 1 conversation" in ok.stderr
    assert chatcli("history", "list", "--json").stdout == ""
    missing = chatcli("history", "show", str(conv_id))
    assert missing.returncode == 2 and "no conversation" in missing.stderr


def test_chat_usage_errors(tiny_model_dir):
    for args, expect in [
        (["--resume", "5", "--no-save"], "--resume needs the history"),
        (["--tint", "loud"], "invalid --tint"),
        (["--resume", "abc"], "Invalid value for '[ID]'"),
        (["7"], "chatcli chat --resume 7"),
        (["--temperature", "-1"], "invalid temperature"),
    ]:
        r = chatcli("chat", "--model", str(tiny_model_dir), *args)
        assert r.returncode == 2 and expect in r.stderr and r.stderr.startswith("chatcli: error:"), (args, r.stderr)


def test_no_save_keeps_chat_out_of_history(tiny_model_dir):
    r = chatcli("chat", "--model", str(tiny_model_dir), "-n", "3", "--no-save", stdin="secret\n")
    assert r.returncode == 0 and r.stdout
    assert chatcli("history", "list", "--json").stdout == ""


def test_plain_chat_gets_this_invocations_plugins_commands_and_events(tiny_model_dir, tmp_path):
    home = tmp_path / "home"
    heard = tmp_path / "heard.txt"
    (home / "config" / "plugins").mkdir(parents=True)
    (home / "config" / "plugins" / "tally.py").write_text(
        "from chatcli.plugins.hookspecs import hookimpl\n"
        "@hookimpl\n"
        "def register_commands(register):\n"
        "    register('tally', lambda ctx: ctx.say('tallied', 'result'), 'count')\n"
        "@hookimpl\n"
        "def answer_finished(done):\n"
        f"    open({str(heard)!r}, 'a').write(done.finish_reason + '\\n')\n",
        encoding="utf-8",
    )
    r = chatcli("chat", "--model", str(tiny_model_dir), "-t", "0", "-n", "3", "--no-save",
                stdin="/tally\nhello\n/rank\n", home=home)  # fmt: skip
    assert "tallied" in r.stdout, r.stderr
    assert heard.read_text().split() == ["length"]  # the chat core told this chat's plugins
    assert "/rank needs the full-screen chat" in r.stderr  # plain mode declares no screens
