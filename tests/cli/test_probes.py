"""`chatcli lens` and `chatcli attention` on a tiny model: JSON schema, tables, adapters, one-line refusals."""

from __future__ import annotations

import json

import pytest

import chatcli
from tests.cli.test_inspect import run
from tests.lora_helpers import peft_model, save_peft


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return chatcli.load_model(str(tiny_model_dir), device="cpu")


def _one_json_line(out: str) -> dict:
    lines = out.splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_lens_json_is_one_line_with_every_layer(capsys, tiny_model_dir, engine):
    code, out, _ = run(capsys, "lens", "The quick brown fox", "--raw", "--top", "4", "--model", str(tiny_model_dir),
                       "--json")
    data = _one_json_line(out)
    assert code == 0 and data["type"] == "lens"
    layers = data["layers"]
    assert [la["layer"] for la in layers] == list(range(engine.model.config.num_hidden_layers + 1))
    assert all(len(la["top"]) == 4 and set(la["top"][0]) == {"id", "token", "prob"} for la in layers)
    want = chatcli.lens(engine, "The quick brown fox", raw=True, top_n=4)
    assert layers[-1]["top"] == [t.to_json() for t in want.layers[-1].top]


def test_lens_applies_the_chat_template_unless_raw(capsys, tiny_model_dir, engine):
    _, chat_out, _ = run(capsys, "lens", "Hello", "--model", str(tiny_model_dir), "--json")
    _, raw_out, _ = run(capsys, "lens", "Hello", "--raw", "--model", str(tiny_model_dir), "--json")
    chat, raw = _one_json_line(chat_out), _one_json_line(raw_out)
    assert chat["position"] == len(engine.tokenizer.encode_chat([{"role": "user", "content": "Hello"}])) - 1
    assert raw["position"] == len(engine.completion_ids("Hello")) - 1
    assert chat["layers"][-1] != raw["layers"][-1]


def test_lens_table_marks_the_answer(capsys, tiny_model_dir):
    code, out, _ = run(capsys, "lens", "The quick brown fox", "--raw", "--model", str(tiny_model_dir))
    assert code == 0
    assert "layer" in out and "top tokens" in out and "emb" in out and "out" in out
    assert "◀top1" in out and "top token" in out.splitlines()[-1]


def test_lens_reads_the_adapter(capsys, tiny_model_dir, tmp_path):
    adapter = save_peft(peft_model(tiny_model_dir, r=4, lora_alpha=8, target_modules="all-linear"), tmp_path / "ad")
    args = ("lens", "The quick brown fox", "--raw", "--model", str(tiny_model_dir), "--json")
    _, base, _ = run(capsys, *args)
    code, adapted, _ = run(capsys, *args, "--lora", str(adapter))
    assert code == 0 and _one_json_line(base)["layers"][-1] != _one_json_line(adapted)["layers"][-1]
    assert _one_json_line(base)["layers"][0]["top"] == _one_json_line(adapted)["layers"][0]["top"]  # embeddings


def test_attention_json_and_table(capsys, tiny_model_dir, engine):
    code, out, _ = run(capsys, "attention", "The quick brown fox", "--raw", "--layer", "1", "--head", "2",
                       "--model", str(tiny_model_dir), "--json")
    data = _one_json_line(out)
    ids = engine.completion_ids("The quick brown fox")
    assert code == 0 and data["type"] == "attention" and data["layer"] == 1 and data["head"] == 2
    assert [w["id"] for w in data["weights"]] == ids and sum(w["weight"] for w in data["weights"]) == pytest.approx(1)
    code, out, _ = run(capsys, "attention", "The quick brown fox", "--raw", "--position", "2",
                       "--model", str(tiny_model_dir))
    third = engine.tokenizer.token_text(ids[2]).replace(" ", "␣")
    assert code == 0 and f"What {third} (position 2)" in out and "weight" in out
    assert "average of 2 layers" in out


@pytest.mark.parametrize("flags, message", [
    (("--layer", "2"), "no layer 2: this model's layers are 0..1"),
    (("--head", "4"), "no head 4: this model's heads are 0..3"),
    (("--position", "99"), "position 99 is outside the text: use 0.."),
])
def test_bad_layer_head_position_are_one_line_usage_errors(capsys, tiny_model_dir, flags, message):
    code, out, err = run(capsys, "attention", "The quick brown fox", "--raw", *flags, "--model", str(tiny_model_dir))
    errors = [line for line in err.splitlines() if line.startswith("chatcli: error:")]  # after the loading line
    assert code == 2 and out == "" and len(errors) == 1 and message in errors[0]


@pytest.mark.parametrize("command", ["lens", "attention"])
def test_a_server_is_refused_in_one_line(capsys, command):
    code, out, err = run(capsys, command, "hi", "--endpoint", "http://127.0.0.1:9/v1")
    assert code == 2 and out == "" and err.count("\n") == 1 and "a server returns no hidden states" in err


def test_bad_top_is_a_usage_error(capsys, tiny_model_dir):
    code, _, err = run(capsys, "lens", "hi", "--top", "0", "--model", str(tiny_model_dir))
    assert code == 2 and err.count("\n") == 1 and "--top" in err
