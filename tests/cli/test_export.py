"""`chatcli models export` and `chatcli lora export` as a person types them: files written, the
Modelfile, the model answering from the export, and every refusal one line that writes nothing."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from chatcli.hub.gguf.importer import open_gguf, read_metadata
from tests.cli_support import run
from tests.lora_helpers import peft_model, save_peft


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_model_dir):
    pm = peft_model(tiny_model_dir, r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "up_proj"])
    return save_peft(pm, tmp_path_factory.mktemp("ad") / "ad")


def test_model_export_writes_gguf_and_modelfile(capsys, tmp_path, tiny_model_dir, adapter):
    out = tmp_path / "tiny.gguf"
    code, stdout, err = run(capsys, "models", "export", str(tiny_model_dir), "--lora", f"{adapter}:0.5",
                            "--quantize", "f16", "--out", str(out))
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.Modelfile", "tiny.gguf"]
    lines = stdout.splitlines()
    assert lines[0].startswith(f"{out}  ") and "F16" in lines[0]
    assert lines[1] == f"{tmp_path / 'tiny.Modelfile'}  for Ollama: ollama create NAME -f {tmp_path / 'tiny.Modelfile'}"
    meta = read_metadata(open_gguf(out))
    assert meta["general.name"] == f"{tiny_model_dir} + ad×0.5"
    modelfile = (tmp_path / "tiny.Modelfile").read_text()
    assert "FROM ./tiny.gguf" in modelfile and "{{ .Content }}<|im_end|>" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile

    # the export answers like the model with the adapter at 0.5 (greedy, same tokens)
    code, direct, err = run(capsys, "generate", "-m", str(tiny_model_dir), "--lora", f"{adapter}:0.5", "hello",
                            "-t", "0", "-n", "8", "--no-save")
    assert code == 0, err
    code, exported, err = run(capsys, "generate", "-m", str(out), "hello", "-t", "0", "-n", "8", "--no-save")
    assert code == 0, err
    assert exported == direct


def test_lora_export_writes_an_adapter_gguf(capsys, tmp_path, tiny_model_dir, adapter):
    out = tmp_path / "ad.gguf"
    code, stdout, err = run(capsys, "lora", "export", str(adapter), "--model", str(tiny_model_dir), "--out", str(out))
    assert code == 0, err
    assert stdout.startswith(f"{out}  ") and "8 LoRA pairs, alpha 8" in stdout
    meta = read_metadata(open_gguf(out))
    assert meta["general.type"] == "adapter" and meta["adapter.type"] == "lora"
    assert list(tmp_path.iterdir()) == [out]


@pytest.mark.parametrize("args, message", [
    (["--quantize", "int8"], "in-memory quantization"),
    (["--quantize", "int4"], "use q4_0"),
    (["--quantize", "q4_k"], "use f16, q8_0, q4_0"),
    (["--format", "safetensors"], "use gguf"),
])
def test_bad_options_are_one_usage_line(capsys, tmp_path, tiny_model_dir, args, message):
    code, _, err = run(capsys, "models", "export", str(tiny_model_dir), "--out", str(tmp_path / "m.gguf"), *args)
    assert code == 2 and err.count("\n") == 1 and message in err
    assert list(tmp_path.iterdir()) == []


def test_refusals_write_nothing(capsys, tmp_path, tiny_model_dir, tiny_family_dirs):
    out = tmp_path / "out"
    out.mkdir()
    # an unsupported architecture: exit 2
    code, _, err = run(capsys, "models", "export", str(tiny_family_dirs("qwen2")), "--out", str(out / "m.gguf"))
    assert code == 2 and err.count("\n") == 1 and "qwen2" in err
    # a quantized checkpoint: exit 2
    q = tmp_path / "int8"
    shutil.copytree(tiny_model_dir, q)
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(q / "model.safetensors"))
    tensors["model.layers.0.self_attn.q_proj.weight"] = tensors["model.layers.0.self_attn.q_proj.weight"].to(torch.int8)
    save_file(tensors, str(q / "model.safetensors"))
    code, _, err = run(capsys, "models", "export", str(q), "--out", str(out / "m.gguf"))
    assert code == 2 and err.count("\n") == 1 and "quantized" in err
    # a missing adapter: refused before the model loads
    code, _, err = run(capsys, "models", "export", str(tiny_model_dir), "--lora", str(tmp_path / "nope"),
                       "--out", str(out / "m.gguf"))
    assert code in (1, 2) and err.count("\n") == 1
    # not a .gguf name, a missing folder
    code, _, err = run(capsys, "models", "export", str(tiny_model_dir), "--out", str(out / "m.bin"))
    assert code == 2 and ".gguf" in err
    code, _, err = run(capsys, "models", "export", str(tiny_model_dir), "--out", str(tmp_path / "no" / "m.gguf"))
    assert code == 2 and "does not exist" in err
    assert list(out.iterdir()) == []


def test_existing_files_need_force(capsys, tmp_path, tiny_model_dir):
    (tmp_path / "m.Modelfile").write_text("mine")
    code, _, err = run(capsys, "models", "export", str(tiny_model_dir), "--out", str(tmp_path / "m.gguf"))
    assert code == 2 and "m.Modelfile already exists" in err and "--force" in err
    assert (tmp_path / "m.Modelfile").read_text() == "mine" and not (tmp_path / "m.gguf").exists()
    code, _, err = run(capsys, "models", "export", str(tiny_model_dir), "--out", str(tmp_path / "m.gguf"), "--force")
    assert code == 0, err
    assert (tmp_path / "m.Modelfile").read_text().startswith("# Made by chatcli")


def test_lora_export_refuses_a_replaced_head(capsys, tmp_path, tiny_model_dir):
    pm = peft_model(tiny_model_dir, r=4, lora_alpha=8, target_modules=["q_proj"], modules_to_save=["lm_head"])
    folder = save_peft(pm, tmp_path / "head")
    code, _, err = run(capsys, "lora", "export", str(folder), "--model", str(tiny_model_dir),
                       "--out", str(tmp_path / "head.gguf"))
    assert code == 2 and err.count("\n") == 1 and "modules_to_save" in err
    assert not (tmp_path / "head.gguf").exists()
    json.loads((folder / "adapter_config.json").read_text())  # the adapter is untouched
