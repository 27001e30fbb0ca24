"""`chatcli generate` on a model that loops: one warning line on stderr, stdout unchanged (text and --json)."""

from __future__ import annotations

import json

import pytest

from tests.cli_support import run
from tests.looping import make_looping_checkpoint

UNIT = "Romeadddaygreick"  # the looping model's cycle, as text


@pytest.fixture(scope="module")
def looping_dir(tmp_path_factory):
    return make_looping_checkpoint(tmp_path_factory.mktemp("looping"))


def warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if "repeats itself" in line]


def test_text_mode_prints_the_answer_alone_and_one_warning_with_the_flags(capsys, looping_dir):
    code, out, err = run(capsys, "generate", "hi", "--model", str(looping_dir), "--temperature", "0", "-n", "20")
    assert code == 0
    assert out == UNIT * 4 + "\n"  # the text, nothing else
    [line] = warnings(err)
    assert line == (f'chatcli: the answer repeats itself: "{UNIT}" ×3 from token 1; greedy decoding loops easily: '
                    "--temperature 0.7 samples instead, or --repetition-penalty 1.2 makes repeated tokens less likely")


def test_sampling_offers_the_penalty_alone(capsys, looping_dir):
    code, out, err = run(capsys, "generate", "hi", "--model", str(looping_dir), "--temperature", "0.7", "--seed", "1",
                         "-n", "20")
    assert code == 0 and out == UNIT * 4 + "\n"  # the model is certain: sampling loops too
    [line] = warnings(err)
    assert line.endswith("; --repetition-penalty 1.2 makes repeated tokens less likely")
    assert "--temperature" not in line


def test_json_mode_keeps_its_schema_and_says_it_on_stderr(capsys, looping_dir):
    code, out, err = run(capsys, "generate", "hi", "--model", str(looping_dir), "--temperature", "0", "-n", "20", "--json")
    assert code == 0
    types = [json.loads(line)["type"] for line in out.splitlines()]
    assert types == ["meta"] + ["step"] * 20 + ["done"]  # no notice object: the schema has none
    assert len(warnings(err)) == 1 and "--repetition-penalty 1.2" in err


def test_an_answer_that_stops_before_the_third_copy_says_nothing(capsys, looping_dir):
    code, out, err = run(capsys, "generate", "hi", "--model", str(looping_dir), "--temperature", "0", "-n", "13")
    assert code == 0 and out == UNIT * 2 + "Romeaddday\n"  # the third copy has 3 of its 5 tokens
    assert warnings(err) == []
