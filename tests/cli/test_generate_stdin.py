"""`chatcli generate` joins piped stdin and PROMPT: real pipes, a regular file, /dev/null, a terminal never read.

Each case runs the CLI in a subprocess with ``--print-prompt`` (tokenizer only, no weights), so
the message the model would see is on stdout byte for byte.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

USER = "<|im_start|>user\n"
END = "<|im_end|>\n"


def run(model_dir, *argv, stdin=subprocess.DEVNULL, data: bytes | None = None):
    cmd = [sys.executable, "-m", "chatcli", "generate", *argv, "--model", str(model_dir), "--print-prompt"]
    feed = {"input": data} if data is not None else {"stdin": stdin}  # input= makes a pipe
    r = subprocess.run(cmd, capture_output=True, timeout=120, env={**os.environ, "CHATCLI_DEBUG": ""}, **feed)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def message(prompt: str) -> str:
    """The user message between the template's markers."""
    return prompt[prompt.index(USER) + len(USER): prompt.rindex(END)]


def test_piped_text_comes_first_then_a_blank_line_then_the_prompt(tiny_model_dir):
    code, out, err = run(tiny_model_dir, "Summarize in three words", data=b"Paris is the capital of France.\n")
    assert code == 0, err
    assert message(out) == "Paris is the capital of France.\n\nSummarize in three words"


def test_piped_text_keeps_its_indentation_and_inner_blank_lines(tiny_model_dir):
    code, out, _ = run(tiny_model_dir, "Explain", data=b"  def f():\n\n      return 1\n\n\n")
    assert code == 0 and message(out) == "  def f():\n\n      return 1\n\nExplain"


def test_without_prompt_the_piped_text_is_the_message(tiny_model_dir):
    code, out, _ = run(tiny_model_dir, data=b"What is the capital of France?")
    assert code == 0 and message(out) == "What is the capital of France?"


def test_empty_stdin_leaves_the_prompt_byte_identical(tiny_model_dir):
    _, alone, _ = run(tiny_model_dir, "Say hi  ")
    for data in (b"", b"\n", b"  \n\t"):
        code, out, _ = run(tiny_model_dir, "Say hi  ", data=data)
        assert code == 0 and out == alone


def test_dev_null_is_never_read(tiny_model_dir):
    with open(os.devnull, "rb") as null:
        code, out, _ = run(tiny_model_dir, "Say hi", stdin=null)
    assert code == 0 and message(out) == "Say hi"
    with open(os.devnull, "rb") as null:
        code, out, err = run(tiny_model_dir, stdin=null)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "missing PROMPT (stdin is not a pipe or a file)" in err


def test_a_regular_file_on_stdin_is_joined(tiny_model_dir, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"Line one.\nLine two.\n")
    with open(notes, "rb") as f:
        code, out, _ = run(tiny_model_dir, "Summarize", stdin=f)
    assert code == 0 and message(out) == "Line one.\nLine two.\n\nSummarize"


def test_a_terminal_is_never_read(tiny_model_dir):
    pty = pytest.importorskip("pty")
    leader, follower = pty.openpty()
    try:
        code, out, _ = run(tiny_model_dir, "Say hi", stdin=follower)  # would block forever if it were read
    finally:
        os.close(leader)
        os.close(follower)
    assert code == 0 and message(out) == "Say hi"


def test_empty_stdin_and_no_prompt_is_one_line(tiny_model_dir):
    code, out, err = run(tiny_model_dir, data=b"\n")
    assert code == 2 and out == "" and "missing PROMPT (stdin was empty)" in err and err.count("\n") == 1


def test_dash_and_at_file_keep_working(tiny_model_dir, tmp_path):
    code, out, _ = run(tiny_model_dir, "-", data=b"from stdin\n")
    assert code == 0 and message(out) == "from stdin\n"  # '-': stdin is the message, as it was
    question = tmp_path / "q.txt"
    question.write_text("What is this?")
    code, out, _ = run(tiny_model_dir, f"@{question}")
    assert code == 0 and message(out) == "What is this?"
    code, out, _ = run(tiny_model_dir, f"@{question}", data=b"A cat.")
    assert code == 0 and message(out) == "A cat.\n\nWhat is this?"


def test_stdin_that_is_not_utf8_is_read_with_replacement_characters(tiny_model_dir):
    code, out, err = run(tiny_model_dir, "Translate", data=b"caf\xe9\n")
    assert code == 0 and message(out) == "caf\ufffd\n\nTranslate"
    assert "the prompt from stdin is not valid UTF-8" in err
