"""`chatcli generate --think/--no-think`: the template's enable_thinking, one line for a template without it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_support import run

QWEN3 = Path(__file__).parent.parent / "tokenizer" / "qwen3_template.jinja"


def test_no_think_closes_an_empty_block_in_the_prompt(capsys, tiny_model_dir):
    base = ("generate", "Capital of France?", "--model", str(tiny_model_dir), "--chat-template", str(QWEN3), "--print-prompt")
    code, off, err = run(capsys, *base, "--no-think")
    assert code == 0 and err == "" and off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    code, on, _ = run(capsys, *base, "--think")
    assert code == 0 and on.endswith("<|im_start|>assistant\n")
    assert run(capsys, *base)[1] == on  # Qwen3's default is to think


def test_a_template_without_the_switch_says_so_in_one_line(capsys, tiny_model_dir):
    _, plain, _ = run(capsys, "generate", "hi", "--model", str(tiny_model_dir), "--print-prompt")
    code, out, err = run(capsys, "generate", "hi", "--model", str(tiny_model_dir), "--print-prompt", "--no-think")
    assert code == 0 and out == plain
    assert err.endswith("has no thinking switch (enable_thinking): --think/--no-think and /think change nothing for it\n")
    assert err.count("\n") == 1


def test_the_answer_is_made_from_the_switched_prompt(capsys, tiny_model_dir):
    """--no-think's prompt carries the empty <think></think> block: more prompt tokens than --think's."""
    counts = {}
    for flag in ("--think", "--no-think"):
        code, out, err = run(capsys, "generate", "hi", "--model", str(tiny_model_dir), "--chat-template", str(QWEN3),
                             flag, "-n", "2", "--temperature", "0", "--json")
        assert code == 0, err
        counts[flag] = json.loads(out.splitlines()[-1])["prompt_tokens"]
    assert counts["--no-think"] > counts["--think"]


@pytest.mark.parametrize("extra, message", [
    (("--raw",), "--raw uses no template"),
    (("--endpoint", "http://127.0.0.1:9/v1"), "--think/--no-think cannot be used with --endpoint"),
])
def test_refused_combinations_are_one_line_exit_2(capsys, tiny_model_dir, extra, message):
    code, out, err = run(capsys, "generate", "hi", "--model", str(tiny_model_dir), "--think", *extra)
    assert code == 2 and out == "" and message in err and err.count("\n") == 1
