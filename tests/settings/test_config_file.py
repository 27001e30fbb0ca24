"""The config file reader: [defaults] checked key by key, one line naming the file and key, plugins kept valid."""

from __future__ import annotations

import os

import pytest

from chatcli.errors import UsageError
from chatcli.plugins.settings import selection_setting
from chatcli.settings.config_file import ConfigError, ConfigUnreadable, load, read_defaults


@pytest.fixture
def config(_chatcli_home):
    folder = _chatcli_home / "config"
    folder.mkdir(parents=True, exist_ok=True)

    def write(text: str, name: str = "config.toml"):
        (folder / name).write_text(text, encoding="utf-8")
        return folder / name

    return write


def test_no_file_no_defaults():
    assert load().path is None and read_defaults() == {}


def test_defaults_and_plugins_read_together(config):
    path = config(
        'plugins = ["rank"]\n[defaults]\nmodel = "my-model"\ndtype = "bfloat16"\nquantize = "int8"\n'
        "temperature = 1\ntop_p = 0.9\ntop_k = 40\nmin_p = 0.05\nrepetition_penalty = 1.1\nseed = 7\n"
        'system = ""\nmax_tokens = 64\nadapters = ["pirate:0.5", "shout"]\n'
    )
    defaults = read_defaults()
    assert defaults == {"model": "my-model", "dtype": "bfloat16", "quantize": "int8", "temperature": 1.0,
                        "top_p": 0.9, "top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1, "seed": 7,
                        "system": "", "max_tokens": 64, "adapters": ["pirate:0.5", "shout"]}
    assert isinstance(defaults["temperature"], float)
    assert selection_setting() == (["rank"], str(path))  # the plugins key keeps working


def test_json_config_has_the_same_shape(config):
    config('{"plugins": "none", "defaults": {"temperature": 0.3, "adapters": "pirate"}}', "config.json")
    assert read_defaults() == {"temperature": 0.3, "adapters": ["pirate"]}
    assert selection_setting()[0] == "none"


@pytest.mark.parametrize("text, words", [
    ("[defaults]\ntemperatur = 0.3\n", ["unknown key 'temperatur' in [defaults]", "did you mean temperature?"]),
    ("[default]\ntemperature = 0.3\n", ["unknown key 'default'", "did you mean defaults?"]),
    ('[defaults]\ntemperature = "hot"\n', ["[defaults] temperature must be a number, not a string 'hot'"]),
    ("[defaults]\ntop_k = 2.5\n", ["[defaults] top_k must be an integer, not a number 2.5"]),
    ("[defaults]\nseed = true\n", ["[defaults] seed must be an integer, not a boolean"]),
    ("[defaults]\ntemperature = -1\n", ["[defaults] temperature cannot be -1.0: use a number >= 0"]),
    ("[defaults]\ntop_p = 1.5\n", ["[defaults] top_p cannot be 1.5: use a number in (0, 1]"]),
    ('[defaults]\ndtype = "float64"\n', ["[defaults] dtype must be one of float32, bfloat16, float16"]),
    ('[defaults]\nquantize = "int3"\n', ["[defaults] quantize must be one of none, int8, int4"]),
    ("[defaults]\nadapters = [1]\n", ["[defaults] adapters must be a list of adapter names or paths"]),
    ('[defaults]\nmodel = " "\n', ["[defaults] model must name a model"]),
    ("defaults = 3\n", ["'defaults' must be a table"]),
    ("[defaults]\ntemperature = 0.3\n\ntop_p = = 2\n", ["not valid TOML", "line 4"]),
])
def test_bad_config_is_one_line_naming_file_and_key(config, text, words):
    path = config(text)
    with pytest.raises(ConfigError) as e:
        read_defaults()
    message = e.value.message
    assert "\n" not in message and str(path) in message
    assert e.value.exit_code == 2 and isinstance(e.value, UsageError)
    for w in words:
        assert w in message


def test_plugin_selection_survives_a_bad_defaults_table(config):
    config('plugins = "none"\n[defaults]\ntemperatur = 1\n')
    assert selection_setting()[0] == "none"


def test_unreadable_config_is_exit_1(config, monkeypatch):
    config("[defaults]\n")

    def refuse(path, what="file"):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("chatcli.regular_file.read_bytes", refuse)  # chmod does not stop root
    with pytest.raises(ConfigUnreadable) as e:
        load()
    assert e.value.exit_code == 1 and "Permission denied" in e.value.message and "\n" not in e.value.message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_config_is_refused_not_waited_on(_chatcli_home):
    folder = _chatcli_home / "config"
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "config.toml")
    with pytest.raises(ConfigUnreadable, match="not a regular file"):
        load()
