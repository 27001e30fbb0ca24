"""GGUF export: tiny models through the exporter and back (our importer, transformers' GGUF loader),
the metadata llama.cpp reads, adapters merged, refusals that write nothing, the atomic write.

Reference logits for a quantized export come from the original model with each matrix
replaced by ``dequantize(quantize(W))`` computed here with gguf-py, so the round trip is
checked to float precision for every type, not only "close to the original".
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from chatcli.errors import ModelError, UsageError
from chatcli.hub.checkpoint import load_checkpoint
from chatcli.hub.gguf import exporter
from chatcli.hub.gguf.exporter import check_quantize, export_gguf, preflight
from chatcli.hub.gguf.importer import import_gguf, open_gguf, read_metadata
from chatcli.lora.manager import AdapterManager
from tests.tiny_gguf import gguf_name as reference_gguf_name
from tests.tiny_gguf import llama_cpp_permute

gguf = pytest.importorskip("gguf")

IDS = torch.tensor([[1, 5, 77, 200, 3, 42, 9, 310, 2, 1, 17, 64]])


def _state(model_dir: Path) -> dict[str, torch.Tensor]:
    model = load_checkpoint(model_dir, dtype=torch.float32, device="cpu")
    state, _ = AdapterManager(model).merged_state_dict()
    return state


@torch.no_grad()
def _logits(model_dir: Path, replace: dict[str, np.ndarray] | None = None) -> torch.Tensor:
    model = load_checkpoint(model_dir, dtype=torch.float32, device="cpu")
    for key, value in (replace or {}).items():
        model.get_parameter(key).copy_(torch.from_numpy(value))
    return model(IDS)[0]


def _stored(arr: np.ndarray, qtype: str) -> np.ndarray:
    """What a tensor becomes once stored as ``qtype`` and read back (gguf-py, not chatcli)."""
    if qtype == "F16":
        return arr.astype(np.float16).astype(np.float32)
    q = gguf.GGMLQuantizationType[qtype]
    return gguf.quants.dequantize(gguf.quants.quantize(arr, q), q).reshape(arr.shape).astype(np.float32)


@pytest.mark.parametrize("quantize", ["f16", "q8_0", "q4_0"])
def test_round_trip_through_our_importer(tiny_model_dir, tmp_path, quantize):
    state = _state(tiny_model_dir)
    result = export_gguf(tiny_model_dir, state, tmp_path / "m.gguf", quantize=quantize, name="tiny")
    types = {t.name: t.tensor_type.name for t in open_gguf(tmp_path / "m.gguf").tensors}
    matrix = {"f16": "F16", "q8_0": "Q8_0", "q4_0": "Q4_0"}[quantize]
    assert types["blk.0.attn_q.weight"] == matrix and types["blk.1.ffn_down.weight"] == matrix
    assert types["token_embd.weight"] == ("Q8_0" if quantize == "q4_0" else matrix)
    assert types["blk.0.attn_norm.weight"] == "F32" and types["output_norm.weight"] == "F32"
    assert "output.weight" not in types  # tied: llama.cpp reads token_embd
    assert result.types == dict(__import__("collections").Counter(types.values()))

    back = import_gguf(tmp_path / "m.gguf", tmp_path / "imported")
    got = _logits(back)
    want = _logits(tiny_model_dir, {
        k: _stored(v.numpy(), types[reference_gguf_name(k)]) for k, v in state.items() if v.dim() == 2
    })
    torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)
    original = _logits(tiny_model_dir)
    bound = {"f16": 0.2, "q8_0": 2.0, "q4_0": 25.0}[quantize]  # this random model's logits reach ~30
    assert (got - original).abs().max() < bound
    agree = (got.argmax(-1) == original.argmax(-1)).float().mean().item()
    assert agree >= {"f16": 1.0, "q8_0": 0.8, "q4_0": 0.5}[quantize]


def test_qk_layout_matches_transformers_gguf_loader(tiny_model_dir, tmp_path):
    """transformers' own GGUF reader (its own un-permutation) gets the original model back: the q/k
    layout is llama.cpp's, not merely the inverse of chatcli's importer."""
    transformers = pytest.importorskip("transformers")
    from tests.tiny import load_hf_oracle

    export_gguf(tiny_model_dir, _state(tiny_model_dir), tmp_path / "m.gguf", quantize="f16")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32).eval()
    with torch.no_grad():
        got = theirs(IDS).logits[0]
        want = load_hf_oracle(tiny_model_dir)(IDS).logits[0]
    assert (got - want).abs().max() < 0.2
    assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_qk_rows_are_llama_cpp_permuted(tiny_model_dir, tmp_path):
    """Each q/k matrix in the file is the HF matrix permuted the way tests/tiny_gguf.py (llama.cpp's
    converter) permutes it; everything else keeps its values."""
    state = _state(tiny_model_dir)
    export_gguf(tiny_model_dir, state, tmp_path / "m.gguf", quantize="f16")
    tensors = {t.name: t for t in open_gguf(tmp_path / "m.gguf").tensors}
    for hf, value in state.items():
        t = tensors[reference_gguf_name(hf)]
        stored = gguf.quants.dequantize(t.data, t.tensor_type).reshape(tuple(reversed([int(x) for x in t.shape])))
        want = value.numpy()
        if hf.endswith("q_proj.weight"):
            want = llama_cpp_permute(want, 4)
        elif hf.endswith("k_proj.weight"):
            want = llama_cpp_permute(want, 2)
        np.testing.assert_array_equal(stored, want.astype(np.float16).astype(np.float32) if want.ndim == 2 else want)


def test_metadata_llama_cpp_reads(tiny_model_dir, tmp_path):
    path = tmp_path / "m.gguf"
    export_gguf(tiny_model_dir, _state(tiny_model_dir), path, quantize="q8_0", name="tiny test",
                source_repo="Org/Tiny", sampling={"temperature": 0.2, "top_p": 0.9, "top_k": 40})
    meta = read_metadata(open_gguf(path))
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    tj = json.loads((tiny_model_dir / "tokenizer.json").read_text())
    tc = json.loads((tiny_model_dir / "tokenizer_config.json").read_text())
    assert meta["general.architecture"] == "llama" and meta["general.type"] == "model"
    assert meta["general.name"] == "tiny test" and meta["general.file_type"] == 7
    assert meta["general.source.url"] == "https://huggingface.co/Org/Tiny"
    assert meta["llama.block_count"] == cfg["num_hidden_layers"]
    assert meta["llama.attention.head_count"] == 4 and meta["llama.attention.head_count_kv"] == 2
    assert meta["llama.rope.dimension_count"] == 16 and meta["llama.embedding_length"] == 64
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"  # llama.cpp's names
    tokens = meta["tokenizer.ggml.tokens"]
    assert len(tokens) == cfg["vocab_size"]
    assert all(tokens[i] == t for t, i in tj["model"]["vocab"].items())
    special = {a["id"] for a in tj["added_tokens"] if a["special"]}
    assert [i for i, t in enumerate(meta["tokenizer.ggml.token_type"]) if t == 3] == sorted(special)
    assert meta["tokenizer.ggml.merges"][:3] == [" ".join(m) if isinstance(m, list) else m for m in tj["model"]["merges"][:3]]
    assert meta["tokenizer.ggml.eos_token_id"] == tj["model"]["vocab"].get(tc["eos_token"], 2)
    assert meta["tokenizer.ggml.bos_token_id"] == 1 and meta["tokenizer.ggml.add_bos_token"] is False
    assert meta["tokenizer.chat_template"] == tc["chat_template"]
    assert meta["general.sampling.top_k"] == 40 and abs(meta["general.sampling.temp"] - 0.2) < 1e-6
    # ... and the importer turns the sampling keys back into generation_config.json
    back = import_gguf(path, tmp_path / "imported")
    gen = json.loads((back / "generation_config.json").read_text())
    assert (gen["temperature"], gen["top_p"], gen["top_k"]) == (0.2, 0.9, 40)


def test_untied_head_is_written_as_output(tiny_family_dirs, tmp_path):
    hf = tiny_family_dirs("mistral")
    export_gguf(hf, _state(hf), tmp_path / "m.gguf", quantize="f16")
    names = {t.name for t in open_gguf(tmp_path / "m.gguf").tensors}
    assert "output.weight" in names
    back = import_gguf(tmp_path / "m.gguf", tmp_path / "imported")
    torch.testing.assert_close(_logits(back), _logits(hf), atol=0.2, rtol=0)


def test_merged_adapter_at_its_scale(tiny_model_dir, tmp_path):
    from tests.lora_helpers import peft_model, save_peft

    adapter = save_peft(peft_model(tiny_model_dir, r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "down_proj"]),
                        tmp_path / "ad")
    model = load_checkpoint(tiny_model_dir, dtype=torch.float32, device="cpu")
    mgr = AdapterManager(model)
    mgr.load(adapter, name="ad", scale=0.5)
    with torch.no_grad():
        want = model(IDS)[0]
    state, _ = mgr.merged_state_dict()
    export_gguf(tiny_model_dir, state, tmp_path / "m.gguf", quantize="f16")
    got = _logits(import_gguf(tmp_path / "m.gguf", tmp_path / "imported"))
    assert (got - want).abs().max() < 0.2
    assert (got - _logits(tiny_model_dir)).abs().max() > 1.0  # the adapter is in there


# --- refusals write nothing ----------------------------------------------------------------------


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("value", ["int8", "q4_k", "Q5_0", ""])
def test_unsupported_quantize_is_one_usage_line(value):
    with pytest.raises(UsageError) as e:
        check_quantize(value)
    assert "\n" not in e.value.message and ("q8_0" in e.value.message)


def test_qwen2_is_refused_before_reading(tiny_family_dirs, tmp_path):
    hf = tiny_family_dirs("qwen2")
    with pytest.raises(UsageError, match="qwen2 model"):
        preflight(hf)
    with pytest.raises(UsageError):
        export_gguf(hf, _state(hf), tmp_path / "m.gguf")
    assert _listing(tmp_path) == []


def test_quantized_checkpoints_are_refused(tiny_model_dir, tmp_path):
    q = tmp_path / "gptq"
    shutil.copytree(tiny_model_dir, q)
    cfg = json.loads((q / "config.json").read_text())
    (q / "config.json").write_text(json.dumps({**cfg, "quantization_config": {"quant_method": "gptq", "bits": 4}}))
    with pytest.raises(UsageError, match="quantized \\(gptq\\)"):
        preflight(q)

    from safetensors.torch import load_file, save_file

    i8 = tmp_path / "int8"
    shutil.copytree(tiny_model_dir, i8)
    tensors = load_file(str(i8 / "model.safetensors"))
    tensors["model.layers.0.mlp.up_proj.weight"] = torch.zeros_like(tensors["model.layers.0.mlp.up_proj.weight"],
                                                                    dtype=torch.int8)
    save_file(tensors, str(i8 / "model.safetensors"))
    with pytest.raises(UsageError, match="quantized \\(I8 tensors"):
        preflight(i8)


def test_a_failed_write_leaves_nothing_and_keeps_the_old_file(tiny_model_dir, tmp_path):
    state = _state(tiny_model_dir)
    out = tmp_path / "m.gguf"
    out.write_bytes(b"the previous export")
    state["model.layers.1.mlp.up_proj.weight"] = state["model.layers.1.mlp.up_proj.weight"].clone()
    state["model.layers.1.mlp.up_proj.weight"][0, 0] = float("nan")
    with pytest.raises(ModelError, match="NaN"):
        export_gguf(tiny_model_dir, state, out, quantize="q8_0")
    assert _listing(tmp_path) == ["m.gguf"] and out.read_bytes() == b"the previous export"


def test_f16_overflow_is_refused(tiny_model_dir, tmp_path):
    state = _state(tiny_model_dir)
    state["model.layers.0.mlp.down_proj.weight"] = state["model.layers.0.mlp.down_proj.weight"] * 1e6
    with pytest.raises(ModelError, match="overflows float16.*q8_0"):
        export_gguf(tiny_model_dir, state, tmp_path / "m.gguf", quantize="f16")
    assert _listing(tmp_path) == []


def test_not_enough_disk_is_refused_with_numbers(tiny_model_dir, tmp_path, monkeypatch):
    import collections

    from chatcli.hub.gguf import gguf_out

    monkeypatch.setattr(gguf_out.shutil, "disk_usage", lambda p: collections.namedtuple("u", "total used free")(1, 1, 1000))
    with pytest.raises(ModelError, match="needs about .* free"):
        export_gguf(tiny_model_dir, _state(tiny_model_dir), tmp_path / "m.gguf")
    assert _listing(tmp_path) == []


def test_rows_that_do_not_fit_blocks_stay_f16(tmp_path):
    from tests.tiny import make_tiny_checkpoint

    hf = make_tiny_checkpoint(tmp_path / "odd", "llama", intermediate_size=48)  # ffn_down rows of 48
    result = export_gguf(hf, _state(hf), tmp_path / "m.gguf", quantize="q8_0")
    assert result.kept_f16 == ["blk.0.ffn_down.weight", "blk.1.ffn_down.weight"]
    types = {t.name: t.tensor_type.name for t in open_gguf(tmp_path / "m.gguf").tensors}
    assert types["blk.0.ffn_down.weight"] == "F16" and types["blk.0.ffn_up.weight"] == "Q8_0"


def test_unknown_pre_tokenizer_is_refused(tiny_model_dir, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["pre_tokenizer"] = {"type": "Whitespace"}
    (d / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(ModelError, match="pre-tokenizer"):
        preflight(d)
    assert exporter.QUANTIZE_CHOICES == ("f16", "q8_0", "q4_0")


def test_merged_adapters_name_the_hub_repo_as_base_model(tiny_model_dir, tmp_path):
    export_gguf(tiny_model_dir, _state(tiny_model_dir), tmp_path / "m.gguf", quantize="f16", source_repo="Org/Tiny",
                adapters=("pirate",))
    meta = read_metadata(open_gguf(tmp_path / "m.gguf"))
    assert "general.source.url" not in meta and meta["general.base_model.count"] == 1
    assert (meta["general.base_model.0.organization"], meta["general.base_model.0.name"]) == ("Org", "Tiny")
    assert meta["general.base_model.0.repo_url"] == "https://huggingface.co/Org/Tiny"
