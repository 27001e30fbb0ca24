"""``--compile`` on the commands: one-line refusals, and the config default reaching the engine.

The compiled steps here are exported programs run in Python (no AOTInductor build): what is checked is
the flag's path to :class:`~chatcli.model.compiled.step.CompiledDecoder`, not the compiler
(tests/model/test_compiled_step.py builds and loads a real package).
"""

from __future__ import annotations

import json

import pytest
import torch
import chatcli.model.compiled.step as compiled_step
from tests.model.test_compiled_step import Exported
from tests.cli_support import run




@pytest.fixture
def decoders(monkeypatch):
    """Every CompiledDecoder the engine makes, on the counting backend."""
    made = []

    class Counting(compiled_step.CompiledDecoder):
        def __init__(self, say=None, backend=None, **kwargs):
            super().__init__(say, backend=Exported(), **kwargs)
            made.append(self)

    monkeypatch.setattr(compiled_step, "CompiledDecoder", Counting)
    return made


def _answer(capsys, *argv) -> tuple[list[int], str]:
    code, out, err = run(capsys, "generate", "hi", "--json", "-n", "6", "--temperature", "0", "--no-save", *argv)
    assert code == 0, err
    steps = [json.loads(line) for line in out.splitlines() if json.loads(line).get("type") == "step"]
    return [s["id"] for s in steps], err


def test_compile_flag_and_config_default_decode_the_same_greedy_answer(capsys, decoders, tiny_model_dir, _chatcli_home,
                                                                       monkeypatch):  # fmt: skip
    eager, _ = _answer(capsys, "--model", str(tiny_model_dir))  # CHATCLI_COMPILE=0 (tests/conftest.py)
    assert not decoders
    compiled, err = _answer(capsys, "--model", str(tiny_model_dir), "--compile")
    assert len(decoders) == 1 and decoders[0].compiles == 1 and compiled == eager
    assert "--compile: compiling the decode step" in err
    monkeypatch.delenv("CHATCLI_COMPILE")
    folder = _chatcli_home / "config"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text("[defaults]\ncompile = true\n", encoding="utf-8")
    assert _answer(capsys, "--model", str(tiny_model_dir))[0] == eager and len(decoders) == 2
    _answer(capsys, "--model", str(tiny_model_dir), "--no-compile")  # the flag wins over the config
    assert len(decoders) == 2


@pytest.mark.parametrize("argv, env, needle", [
    (["--compile", "--endpoint", "http://127.0.0.1:9/v1"], {}, "--compile cannot be used with --endpoint"),
    ([], {"CHATCLI_COMPILE": "maybe"}, "CHATCLI_COMPILE"),
])  # fmt: skip
def test_bad_combinations_are_one_line(capsys, monkeypatch, tiny_model_dir, argv, env, needle):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code, out, err = run(capsys, "generate", "hi", "--model", str(tiny_model_dir), *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and needle in err


def test_compile_is_for_the_cpu(monkeypatch, tiny_model_dir):
    import chatcli.hub.checkpoint as checkpoint
    from chatcli.engine.loader import load_engine
    from chatcli.errors import UsageError

    monkeypatch.setattr(checkpoint, "resolve_device", lambda spec: torch.device("cuda"))
    with pytest.raises(UsageError, match="--compile compiles the CPU decode step"):
        load_engine(str(tiny_model_dir), compile=True)


def test_python_api_takes_compile(decoders, tiny_model_dir):
    import chatcli

    model = chatcli.load_model(str(tiny_model_dir), compile=True)
    assert model.generator.compiled is decoders[0]
    assert chatcli.load_model(str(tiny_model_dir)).generator.compiled is None


def test_unset_compile_is_auto_for_float32_and_bfloat16_models(capsys, decoders, tiny_model_dir, monkeypatch):
    """Nothing sets `compile`: a float32 model (unquantised, int8 or int4) or a bfloat16 one gets an "auto"
    decoder, which decodes eagerly and asks for one background build of the model as loaded (stubbed here:
    no process starts; bfloat16 with its one-row path); --no-compile gets none."""
    from chatcli.engine import compile_build

    started = []
    monkeypatch.setattr(compile_build, "start", lambda path, *how: started.append((path, *how)) or "bg")
    monkeypatch.delenv("CHATCLI_COMPILE")
    eager_ids, err = _answer(capsys, "--model", str(tiny_model_dir))
    assert [d.mode for d in decoders] == ["auto"] and decoders[0].compiles == 0
    assert len(started) == 1 and started[0][1:5] == (str(tiny_model_dir), "float32", "none", None)
    assert started[0][0].suffix == ".pt2" and started[0][5:] == ("",)
    assert "bg" in err  # the line the build's start returned, shown once
    _answer(capsys, "--model", str(tiny_model_dir), "--quantize", "int8")
    _answer(capsys, "--model", str(tiny_model_dir), "--quantize", "int4")
    assert [d.mode for d in decoders] == ["auto"] * 3
    assert [s[1:] for s in started[1:]] == [(str(tiny_model_dir), "float32", "int8", None, ""),
                                             (str(tiny_model_dir), "float32", "int4", None, "")]  # fmt: skip
    _answer(capsys, "--model", str(tiny_model_dir), "--dtype", "bfloat16")
    assert [d.mode for d in decoders] == ["auto"] * 4
    assert started[3][1:4] == (str(tiny_model_dir), "bfloat16", "none") and started[3][5] == "onednn"  # uncalibrated (tests/conftest.py): the default path
    _answer(capsys, "--model", str(tiny_model_dir), "--no-compile")
    assert len(decoders) == 4 and len(started) == 4
