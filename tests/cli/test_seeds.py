"""Seeds outside 0 <= seed < 2**64 are refused up front (exit 2, one line), before any model loads."""

from __future__ import annotations

import json

import pytest

from tests.cli_support import run as cli_run

TOO_BIG = str(2**64)
NO_MODEL = "/nonexistent/model-dir"  # loading it would fail with exit 1: a 2 proves the seed was checked first


def run(capsys, monkeypatch, *argv, stdin: str = ""):
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return cli_run(capsys, *(str(a) for a in argv))  # the argv lists hold Paths too


@pytest.fixture
def data_files(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi"}) + "\n", encoding="utf-8")
    sft = tmp_path / "sft.jsonl"
    sft.write_text(json.dumps({"text": "hello"}) + "\n", encoding="utf-8")
    return prompts, sft


@pytest.mark.parametrize("seed", [TOO_BIG, "-1"])
@pytest.mark.parametrize("command", ["generate", "chat", "lora diff", "rank generate", "finetune sft"])
def test_every_seed_flag_refuses_out_of_range_before_loading(capsys, monkeypatch, tmp_path, data_files, command, seed):
    prompts, sft = data_files
    argv = {
        "generate": ["generate", "hi"],
        "chat": ["chat", "--plain", "--no-save"],
        "lora diff": ["lora", "diff", "hi", "--lora", str(tmp_path / "missing-adapter")],
        "rank generate": ["rank", "generate", prompts, "-o", tmp_path / "out.jsonl"],
        "finetune sft": ["finetune", "sft", sft, "--out", tmp_path / "run"],
    }[command]
    code, out, err = run(capsys, monkeypatch, *argv, "--model", NO_MODEL, f"--seed={seed}", stdin="hi\n")
    assert code == 2, err
    assert "seed" in err and "2**64" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "run").exists()


def test_largest_seed_is_accepted(capsys, monkeypatch):
    code, _, err = run(capsys, monkeypatch, "generate", "hi", "--model", NO_MODEL, f"--seed={2**64 - 1}")
    assert code == 1 and "seed" not in err  # got past the check, failed on the missing model


def test_rank_generate_needs_room_for_every_candidate_seed(capsys, monkeypatch, tmp_path, data_files):
    prompts, _ = data_files
    code, _, err = run(capsys, monkeypatch, "rank", "generate", prompts, "-n", "3", "-o", tmp_path / "o.jsonl",
                       "--model", NO_MODEL, f"--seed={2**64 - 2}")
    assert code == 2 and f"use a seed <= {2**64 - 3}" in err
