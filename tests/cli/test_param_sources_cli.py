"""Where `chatcli generate`'s sampling values come from: flags, variables, the config's default_map, the model."""

from __future__ import annotations

import json
import shutil

import pytest
import typer
from typer.testing import CliRunner

from chatcli.cli.common import sampling_layers
from tests.cli_support import run


@pytest.fixture(scope="module")
def model_with_defaults(tiny_model_dir, tmp_path_factory):
    """The tiny model, its generation_config.json recommending greedy decoding and top-k 3."""
    d = tmp_path_factory.mktemp("gen") / "m"
    shutil.copytree(tiny_model_dir, d)
    gen = json.loads((d / "generation_config.json").read_text())
    (d / "generation_config.json").write_text(json.dumps({**gen, "do_sample": False, "temperature": 0.6, "top_k": 3}))
    return d


def _meta(capsys, *argv) -> dict:
    code, out, err = run(capsys, "generate", "hi", "--json", "-n", "3", *argv)
    assert code == 0, err
    return json.loads(out.splitlines()[0])


def test_json_meta_says_the_model_chose(capsys, model_with_defaults):
    meta = _meta(capsys, "--model", str(model_with_defaults))
    assert meta["params"]["temperature"] == 0 and meta["params"]["top_k"] == 3
    sources = meta["param_sources"]
    assert sources["temperature"] == "model" and sources["top_k"] == "model"
    assert sources["top_p"] == "built-in" and sources["max_tokens"] == "flag"
    assert set(sources) == set(meta["params"])  # one source for every value the meta shows


def test_a_flag_beats_the_model(capsys, model_with_defaults):
    meta = _meta(capsys, "--model", str(model_with_defaults), "--temperature", "0.9", "--top", "2")
    assert meta["params"]["temperature"] == 0.9 and meta["param_sources"]["temperature"] == "flag"
    assert meta["params"]["top_k"] == 3 and meta["param_sources"]["top_k"] == "model"
    assert meta["param_sources"]["top_n"] == "flag"


def test_a_model_without_sampling_keys_runs_on_the_built_in_values(capsys, tiny_model_dir):
    meta = _meta(capsys, "--model", str(tiny_model_dir))
    assert meta["params"]["temperature"] == 0.7
    assert meta["param_sources"]["temperature"] == "built-in"


def test_a_bad_value_in_the_models_file_is_one_warning(capsys, model_with_defaults, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(model_with_defaults, d)
    (d / "generation_config.json").write_text(json.dumps({"eos_token_id": 2, "temperature": -3, "top_k": 3}))
    code, out, err = run(capsys, "generate", "hi", "--json", "-n", "2", "--model", str(d))
    assert code == 0
    assert err.splitlines()[-1] + "\n" == ("chatcli: warning: the model's generation_config.json has temperature -3 (use a number >= 0): "
                   "left out, the next layer's value is used\n")
    assert err.count("warning") == 1
    meta = json.loads(out.splitlines()[0])
    assert meta["param_sources"]["temperature"] == "built-in" and meta["param_sources"]["top_k"] == "model"


def test_sampling_layers_reads_typer_sources(monkeypatch):
    """A value from the command line is "flag", from its envvar "env", from the default_map "config"."""
    seen = {}
    app = typer.Typer()

    @app.command()
    def cmd(ctx: typer.Context,
            temperature: float | None = typer.Option(None, "--temperature", envvar="T_TEST"),
            top_p: float | None = typer.Option(None, "--top-p"),
            top_k: int | None = typer.Option(None, "--top-k", envvar="K_TEST"),
            seed: int | None = typer.Option(None, "--seed"),
            stop: list[str] | None = typer.Option(None, "--stop")) -> None:
        seen.update(sampling_layers(ctx, dict(temperature=temperature, top_p=top_p, top_k=top_k, seed=seed, stop=stop),
                                    preset={"min_p": 0.1, "system": "x"}))

    monkeypatch.setenv("T_TEST", "0.3")
    result = CliRunner().invoke(app, ["--top-k", "4"], default_map={"top_p": 0.8, "temperature": 0.5},
                                env={"K_TEST": "9", "T_TEST": "0.3"})
    assert result.exit_code == 0, result.output
    assert seen == {"flag": {"top_k": 4}, "env": {"temperature": 0.3}, "config": {"top_p": 0.8},
                    "preset": {"min_p": 0.1, "system": "x"}}
