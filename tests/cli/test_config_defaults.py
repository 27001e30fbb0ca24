"""[defaults], CHATCLI_* variables and --preset on the real commands: flag > preset > env > config > built-in."""

from __future__ import annotations

import json

import pytest
import torch

from tests.cli_support import run
from chatcli.settings.presets import save_preset




@pytest.fixture
def config(_chatcli_home):
    def write(text: str):
        folder = _chatcli_home / "config"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.toml").write_text(text, encoding="utf-8")
        return folder / "config.toml"

    return write


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter for the tiny model that changes its answers."""
    from chatcli.hub.checkpoint import load_checkpoint
    from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA, write_adapter

    model = load_checkpoint(tiny_model_dir)
    gen = torch.Generator().manual_seed(0)
    mods = {n: ModuleLoRA(0.5 * torch.randn(4, m.in_features, generator=gen), 0.5 * torch.randn(m.out_features, 4, generator=gen), 8.0)
            for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.endswith(("q_proj", "v_proj", "up_proj"))}
    return write_adapter(LoRAAdapter(modules=mods, saved={}, base_model="tiny-llama"), tmp_path_factory.mktemp("ad") / "tilt")


def meta(capsys, *argv) -> dict:
    code, out, err = run(capsys, "generate", "hi", "--json", "-n", "2", *argv)
    assert code == 0, err
    return json.loads(out.splitlines()[0])


def test_config_env_preset_flag_in_that_order(capsys, config, monkeypatch, tiny_model_dir):
    config(f'[defaults]\nmodel = "{tiny_model_dir}"\ntemperature = 0.3\ntop_k = 7\n')
    m = meta(capsys)
    assert m["params"]["temperature"] == 0.3 and m["params"]["top_k"] == 7  # the config's model ran
    assert m["param_sources"]["temperature"] == "config"
    monkeypatch.setenv("CHATCLI_TEMPERATURE", "0.5")
    m = meta(capsys)
    assert m["params"]["temperature"] == 0.5 and m["param_sources"]["temperature"] == "env"
    save_preset("p", {"temperature": 0.9, "system": "Be brief."})
    m = meta(capsys, "--preset", "p")
    assert m["params"]["temperature"] == 0.9 and m["param_sources"]["temperature"] == "preset"
    assert m["params"]["top_k"] == 7 and m["param_sources"]["top_k"] == "config"  # the preset leaves it alone
    m = meta(capsys, "--preset", "p", "-t", "0.1")
    assert m["params"]["temperature"] == 0.1 and m["param_sources"]["temperature"] == "flag"


def test_system_and_model_from_a_preset_over_the_config(capsys, config, tiny_model_dir, tmp_path):
    config('[defaults]\nsystem = "From the config."\nmodel = "no-such-model-anywhere"\n')
    save_preset("p", {"system": "From the preset.", "model": str(tiny_model_dir)})
    code, out, err = run(capsys, "generate", "hi", "--preset", "p", "--print-prompt")
    assert code == 0, err
    assert "From the preset." in out and "From the config." not in out
    code, out, err = run(capsys, "generate", "hi", "--preset", "p", "--print-prompt", "--system", "From the flag.")
    assert code == 0 and "From the flag." in out


def test_system_from_config_and_env(capsys, config, tiny_model_dir, monkeypatch):
    config('[defaults]\nsystem = "From the config."\n')
    code, out, _ = run(capsys, "generate", "hi", "--model", str(tiny_model_dir), "--print-prompt")
    assert code == 0 and "From the config." in out
    monkeypatch.setenv("CHATCLI_SYSTEM", "From the environment.")
    code, out, _ = run(capsys, "generate", "hi", "--model", str(tiny_model_dir), "--print-prompt")
    assert "From the environment." in out and "From the config." not in out


def test_adapters_from_a_preset(capsys, tiny_model_dir, adapter):
    save_preset("tilted", {"adapters": [f"{adapter}:0.5"], "model": str(tiny_model_dir), "temperature": 0.0})
    m = meta(capsys, "--preset", "tilted")
    assert m["adapters"] == [{"name": "tilt", "scale": 0.5}]
    m = meta(capsys, "--preset", "tilted", "--lora", f"{adapter}:0.25")  # the flag replaces the preset's list
    assert m["adapters"] == [{"name": "tilt", "scale": 0.25}]


def test_unknown_preset_runs_nothing(capsys, tiny_model_dir, monkeypatch):
    import chatcli.engine.loader as loader

    monkeypatch.setattr(loader, "load_engine", lambda *a, **k: pytest.fail("model loaded"))
    save_preset("terse", {"temperature": 0.2})
    code, out, err = run(capsys, "generate", "hi", "--model", str(tiny_model_dir), "--preset", "trese")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "unknown preset 'trese' (did you mean terse?)" in err and "the presets are terse" in err


@pytest.mark.parametrize("text, words", [
    ("[defaults]\ntemperatur = 0.3\n", "unknown key 'temperatur' in [defaults] (did you mean temperature?)"),
    ("[defaults]\ntemperature = 0.3\ntop_p = = 2\n", "line 3"),
    ('[defaults]\ntemperature = "warm"\n', "[defaults] temperature must be a number"),
])
def test_a_broken_config_stops_commands_that_take_it(capsys, config, tiny_model_dir, monkeypatch, text, words):
    import chatcli.engine.loader as loader

    monkeypatch.setattr(loader, "load_engine", lambda *a, **k: pytest.fail("model loaded"))
    path = config(text)
    code, out, err = run(capsys, "generate", "hi", "--model", str(tiny_model_dir))
    assert code == 2 and out == "" and err.count("\n") == 1 and str(path) in err and words in err, err
    code, out, _ = run(capsys, "generate", "--help")  # help still works...
    assert code == 0 and "--temperature" in out
    code, _, err = run(capsys, "history", "list")  # ... and so do commands that take no [defaults]
    assert code == 0 and "error" not in err


def test_a_bad_environment_variable_is_one_line(capsys, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("CHATCLI_TEMPERATURE", "warm")
    code, out, err = run(capsys, "generate", "hi", "--model", str(tiny_model_dir))
    assert code == 2 and out == "" and err.count("\n") == 1 and "CHATCLI_TEMPERATURE" in err


def test_config_values_of_local_options_do_not_refuse_an_endpoint(capsys, config):
    config('[defaults]\ndtype = "bfloat16"\nquantize = "int8"\nadapters = ["pirate"]\n')
    code, out, err = run(capsys, "generate", "hi", "--endpoint", "http://127.0.0.1:9/v1", "--timeout", "1")
    assert code == 1 and "cannot be used with --endpoint" not in err  # refused by the server, not by the defaults
    code, out, err = run(capsys, "generate", "hi", "--endpoint", "http://127.0.0.1:9/v1", "--dtype", "bfloat16")
    assert code == 2 and "--dtype cannot be used with --endpoint" in err  # a flag typed here still is


def test_defaults_reach_only_options_that_carry_the_variable():
    import typer

    from chatcli.cli import main as cli
    from chatcli.cli.option_layers import default_map

    cli._register_commands()
    tree = default_map(typer.main.get_command(cli.app), {"temperature": 0.3, "model": "m", "dtype": "float16"})
    assert tree["generate"]["temperature"] == 0.3 and tree["chat"]["temperature"] == 0.3
    assert tree["score"]["model"] == "m" and tree["score"]["dtype"] == "float16"
    assert "temperature" not in tree.get("lora", {}).get("diff", {})  # lora diff's greedy default is its own
    assert "dtype" not in tree.get("models", {}).get("import", {})  # the dtype of a conversion is another thing


def test_chat_takes_a_preset_over_the_config(capsys, config, tiny_model_dir, monkeypatch):
    import io
    import sys

    from chatcli.chat.store import Store

    config('[defaults]\nsystem = "From the config."\ntemperature = 0.8\n')
    save_preset("p", {"system": "From the preset.", "temperature": 0.0, "max_tokens": 3, "model": str(tiny_model_dir)})
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n"))
    code, out, err = run(capsys, "chat", "--preset", "p", "--plain")
    assert code == 0, err
    store = Store.open_for_reading()
    conv = store.load(store.latest_id())
    store.close()
    assert conv.system == "From the preset." and conv.params.temperature == 0.0 and conv.params.max_tokens == 3
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n"))
    code, out, err = run(capsys, "chat", "--preset", "nope", "--plain")
    assert code == 2 and "unknown preset 'nope'" in err and err.count("\n") == 1


def test_an_unreadable_config_file_is_exit_1(capsys, config, tiny_model_dir, monkeypatch):
    config("[defaults]\ntemperature = 0.3\n")

    def refuse(path, what="file"):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("chatcli.regular_file.read_bytes", refuse)  # chmod does not stop root
    code, out, err = run(capsys, "generate", "hi", "--model", str(tiny_model_dir))
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "cannot read the config file" in err and "Permission denied" in err
