"""Named presets: saved atomically as TOML, read back checked, names validated, unknown names listed."""

from __future__ import annotations

import pytest

from chatcli.errors import UsageError
from chatcli.settings.config_file import ConfigError
from chatcli.settings.presets import (PresetsUnreadable, UnknownPreset, check_name, load_preset, names,
                                      presets_dir, save_preset)
from chatcli.settings.toml_io import dumps, parse


def test_save_and_load_round_trip():
    values = {"model": "smollm2-135m-instruct", "system": 'Say "hi"\\ then\nstop\t\x7f\x01 é 😀',
              "temperature": 0.3, "top_k": 20, "adapters": ["pirate:0.5"]}
    path = save_preset("terse", values)
    assert path == presets_dir() / "terse.toml"
    preset = load_preset("terse")
    assert preset.values == values and preset.name == "terse"
    assert names() == ["terse"]
    assert [p.name for p in presets_dir().iterdir()] == ["terse.toml"]  # no temporary file left behind


def test_save_replaces_the_old_preset():
    save_preset("p", {"temperature": 0.3})
    save_preset("p", {"system": "new"})
    assert load_preset("p").values == {"system": "new"}


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x.", "a b", "x" * 65, "ü"])
def test_bad_names_are_refused(name):
    with pytest.raises(UsageError, match="invalid preset name"):
        check_name(name)
    with pytest.raises(UsageError):
        save_preset(name, {"temperature": 1})
    assert not presets_dir().exists()


def test_bad_values_write_nothing():
    with pytest.raises(ConfigError, match="temperature cannot be -1"):
        save_preset("p", {"temperature": -1})
    with pytest.raises(UsageError, match="would be empty"):
        save_preset("p", {})
    assert not (presets_dir() / "p.toml").exists()


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(UnknownPreset, match="there are no presets yet"):
        load_preset("nope")
    save_preset("terse", {"temperature": 0.2})
    save_preset("wordy", {"temperature": 1.0})
    with pytest.raises(UnknownPreset) as e:
        load_preset("trese")
    assert "did you mean terse?" in e.value.message and "the presets are terse, wordy" in e.value.message
    assert e.value.exit_code == 2


def test_a_broken_preset_file_names_its_key_or_line():
    presets_dir().mkdir(parents=True)
    (presets_dir() / "p.toml").write_text("temprature = 0.3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key 'temprature' in preset 'p':.*did you mean temperature"):
        load_preset("p")
    (presets_dir() / "p.toml").write_text("x = \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML.*line 1"):
        load_preset("p")


def test_unreadable_presets_folder_is_exit_1(monkeypatch):
    presets_dir().mkdir(parents=True)

    def refuse(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(presets_dir()), "iterdir", refuse)  # chmod does not stop root
    with pytest.raises(PresetsUnreadable) as e:
        names()
    assert e.value.exit_code == 1 and "Permission denied" in e.value.message and "\n" not in e.value.message


def test_writer_refuses_what_toml_cannot_hold():
    with pytest.raises(ValueError):
        dumps({"x": float("nan")})
    with pytest.raises(ValueError):
        dumps({"x": "\ud800"})
    assert parse(dumps({"a": 1e-05, "b": [], "c": "x"}, header="two\nlines").encode()) == {"a": 1e-05, "b": [], "c": "x"}
