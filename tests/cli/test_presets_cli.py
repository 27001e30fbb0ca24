"""`chatcli presets list|show|save`: what is saved is what was typed; bad input is one line and writes nothing."""

from __future__ import annotations

import json

import pytest

from chatcli.settings.presets import load_preset, presets_dir
from tests.cli_support import run


def test_save_show_list(capsys):
    code, out, err = run(capsys, "presets", "save", "terse", "--system", "Answer in one sentence.", "-t", "0.2",
                         "--lora", "pirate:0.5", "--top-k", "20")
    assert code == 0 and "saved preset 'terse'" in err
    assert load_preset("terse").values == {"system": "Answer in one sentence.", "temperature": 0.2, "top_k": 20,
                                           "adapters": ["pirate:0.5"]}
    code, out, err = run(capsys, "presets", "save", "terse", "-m", "other-model")
    assert code == 0 and "replaced preset 'terse'" in err
    assert load_preset("terse").values == {"model": "other-model"}  # replaced whole, not merged
    code, out, _ = run(capsys, "presets", "show", "terse")
    assert code == 0 and 'model = "other-model"' in out and str(presets_dir() / "terse.toml") in out
    code, out, _ = run(capsys, "presets", "show", "terse", "--json")
    assert json.loads(out)["values"] == {"model": "other-model"}
    run(capsys, "presets", "save", "wordy", "-t", "1.2")
    code, out, _ = run(capsys, "presets", "list")
    assert code == 0 and out.splitlines()[0].startswith("terse") and "temperature=1.2" in out.splitlines()[1]
    code, out, _ = run(capsys, "presets", "list", "--json")
    assert [json.loads(line)["name"] for line in out.splitlines()] == ["terse", "wordy"]


def test_no_presets_yet(capsys):
    code, out, err = run(capsys, "presets", "list")
    assert code == 0 and out == "" and "no presets" in err and "chatcli presets save" in err


def test_save_from_config_with_flags_on_top(capsys, _chatcli_home):
    (_chatcli_home / "config").mkdir(parents=True, exist_ok=True)
    (_chatcli_home / "config" / "config.toml").write_text('[defaults]\ntemperature = 0.3\nsystem = "Hi."\n')
    code, _, err = run(capsys, "presets", "save", "mine", "--from-config", "-t", "0.5")
    assert code == 0, err
    assert load_preset("mine").values == {"temperature": 0.5, "system": "Hi."}


def test_save_reads_no_environment_variable(capsys, monkeypatch):
    monkeypatch.setenv("CHATCLI_TEMPERATURE", "0.9")
    run(capsys, "presets", "save", "p", "--top-p", "0.8")
    assert load_preset("p").values == {"top_p": 0.8}


@pytest.mark.parametrize("args, words", [
    (["presets", "save", "../evil", "-t", "1"], "invalid preset name '../evil'"),
    (["presets", "save", "p", "-t", "-1"], "temperature cannot be -1.0"),
    (["presets", "save", "p", "--top-p", "2"], "top_p cannot be 2.0"),
    (["presets", "save", "p", "--dtype", "float64"], "dtype must be one of float32, bfloat16, float16"),
    (["presets", "save", "p"], "would be empty"),
    (["presets", "show", "nope"], "unknown preset 'nope'"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(capsys, args, words):
    code, out, err = run(capsys, *args)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("chatcli: error:"), err
    assert words in err
    assert not presets_dir().exists() or not any(presets_dir().iterdir())


def test_a_broken_preset_file_is_listed_with_its_problem(capsys):
    presets_dir().mkdir(parents=True)
    (presets_dir() / "bad.toml").write_text("temprature = 1\n", encoding="utf-8")
    code, out, _ = run(capsys, "presets", "list")
    assert code == 0 and out.startswith("bad") and "did you mean temperature?" in out
    code, _, err = run(capsys, "presets", "show", "bad")
    assert code == 2 and "unknown key 'temprature'" in err and err.count("\n") == 1


def test_unreadable_presets_folder_is_exit_1(capsys, monkeypatch):
    presets_dir().mkdir(parents=True)

    def refuse(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(presets_dir()), "iterdir", refuse)
    code, out, err = run(capsys, "presets", "list")
    assert code == 1 and out == "" and err.count("\n") == 1 and "cannot read the presets folder" in err
