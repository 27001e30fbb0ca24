"""``--quantize int4`` on a model converted from a Q4_0/Q4_1 GGUF: the 4-bit blocks load as they are.

The importer keeps such a file (``source.gguf``) and records where its Q4 tensors lie; the
int4 loader reads them by that record, with llama.cpp's q/k row permutation undone, so the
layer holds the file's very 4-bit values and only the scales are rounded to bfloat16. Checked
on tiny GGUFs written like llama.cpp's converter writes them, and on the shipped default model
when it is converted on this machine (max |int4 weight - GGUF weight| = 0.0215, 4.6 % of a
quantisation step, mean 2.6e-4, over its 210 Q4_1 matrices: the bfloat16 rounding of
``s = d`` and ``z = m + 8 d``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from chatcli.engine.loader import load_engine
from chatcli.errors import ModelError
from chatcli.hub.gguf.importer import Q4_INDEX, SOURCE_COPY, import_gguf, open_gguf
from chatcli.hub.gguf.llama import gguf_name, unpermute_rotary
from chatcli.hub.gguf.q4_blocks import q4_blocks
from chatcli.hub.manifest import read_manifest, verify_model_dir
from chatcli.model.int4 import Int4Linear
from tests.tiny_gguf import write_tiny_gguf

gguf = pytest.importorskip("gguf")
platformdirs = pytest.importorskip("platformdirs")

DEFAULT_DIR = Path(platformdirs.user_cache_dir("chatcli")) / "models" / "smollm2-135m-instruct"  # the real cache


def _imported(tmp_path: Path, hf_dir: Path, qtype: str, **kw) -> Path:
    src = tmp_path / f"{qtype}.gguf"
    write_tiny_gguf(src, hf_dir, qtype=qtype, **kw)
    return import_gguf(src, tmp_path / f"model-{qtype}")


def _gguf_weights(path: Path) -> dict[str, np.ndarray]:
    """GGUF name -> float32 weights as gguf-py dequantises them (numpy order)."""
    reader = open_gguf(path)
    return {t.name: np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(
        [int(n) for n in reversed(t.shape)]) for t in reader.tensors}


def _compare_with_gguf(model, gguf_path: Path, n_head: int, n_kv: int) -> tuple[float, float, float, int]:
    """(max |Δw|, max |Δw| / step, mean |Δw|, layers) of every int4 layer against the GGUF's weights."""
    ref = _gguf_weights(gguf_path)
    worst = worst_step = total = count = layers = 0
    for name, layer in model.named_modules():
        if not isinstance(layer, Int4Linear):
            continue
        want = ref[gguf_name(f"{name}.weight")]
        heads = n_head if name.endswith("q_proj") else n_kv if name.endswith("k_proj") else None
        if heads is not None:
            want = unpermute_rotary(want, heads)
        diff = np.abs(layer.dequantize(torch.float32).numpy() - want)
        step = layer.parts()[1].float().repeat_interleave(32, dim=1).numpy()
        worst, worst_step = max(worst, float(diff.max())), max(worst_step, float((diff / step).max()))
        total, count, layers = total + float(diff.sum()), count + diff.size, layers + 1
    return worst, worst_step, total / count, layers


@pytest.mark.parametrize("qtype", ["Q4_1", "Q4_0"])
def test_q4_gguf_loads_its_own_4bit_values(tmp_path, tiny_model_dir, qtype):
    out = _imported(tmp_path, tiny_model_dir, qtype, embed_qtype="Q8_0")
    manifest = read_manifest(out)
    assert manifest["source"]["kept"] == SOURCE_COPY and (out / SOURCE_COPY).is_file()
    assert manifest["files"][SOURCE_COPY] == (tmp_path / f"{qtype}.gguf").stat().st_size and not verify_model_dir(out)
    assert len(manifest[Q4_INDEX]) == 7 * 2  # the projections of both layers; not the Q8_0 embedding
    blocks = q4_blocks(out)
    model = load_engine(str(out), device="cpu", quantize="int4").model
    cfg = model.config
    for name in ("model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.k_proj", "model.layers.1.mlp.down_proj"):
        layer = model.get_submodule(name)
        assert torch.equal(layer.parts()[0], blocks[f"{name}.weight"].q)  # the file's 4-bit values, unpermuted
    worst, worst_step, mean, layers = _compare_with_gguf(
        model, out / SOURCE_COPY, cfg.num_attention_heads, cfg.num_key_value_heads)
    assert layers == 14
    assert worst_step <= 2 * 8 * 2**-8  # bfloat16 rounding of s (8 steps of it) and z, relative to a step
    assert mean < 1e-3


def test_float_ggufs_are_not_kept_and_int4_quantises_them(tmp_path, tiny_model_dir):
    out = _imported(tmp_path, tiny_model_dir, "Q8_0")
    assert not (out / SOURCE_COPY).exists() and Q4_INDEX not in read_manifest(out)
    assert q4_blocks(out) is None
    layer = load_engine(str(out), device="cpu", quantize="int4").model.model.layers[0].mlp.up_proj
    assert isinstance(layer, Int4Linear) and layer.group_size == 32


def test_other_group_sizes_quantise_the_float_weights_again(tmp_path, tiny_model_dir):
    out = _imported(tmp_path, tiny_model_dir, "Q4_1")
    direct = load_engine(str(out), device="cpu", quantize="int4").model.model.layers[0].mlp.up_proj
    again = load_engine(str(out), device="cpu", quantize="int4", group_size=64).model.model.layers[0].mlp.up_proj
    assert again.group_size == 64 and direct.group_size == 32
    assert not torch.equal(again.dequantize(torch.float32), direct.dequantize(torch.float32))


def test_a_damaged_record_is_one_line(tmp_path, tiny_model_dir):
    out = _imported(tmp_path, tiny_model_dir, "Q4_1")
    manifest_path = out / "chatcli.json"
    manifest = json.loads(manifest_path.read_text())
    name = "model.layers.0.mlp.up_proj.weight"
    manifest[Q4_INDEX][name]["offset"] = 10**12  # past the end of the file
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ModelError) as e:
        load_engine(str(out), device="cpu", quantize="int4")
    assert "\n" not in str(e.value) and "damaged" in str(e.value) and "up_proj" in str(e.value)
    (out / SOURCE_COPY).unlink()
    assert any(SOURCE_COPY in p for p in verify_model_dir(out))  # the entry is damaged (rebuilt on next use)


@pytest.mark.skipif(q4_blocks(DEFAULT_DIR) is None if DEFAULT_DIR.is_dir() else True,
                    reason="needs the default model converted on this machine with its Q4_1 GGUF kept")
def test_the_default_model_reproduces_its_shipped_q4_1_weights():
    model = load_engine(str(DEFAULT_DIR), device="cpu", quantize="int4", warm_up=False).model
    worst, worst_step, mean, layers = _compare_with_gguf(model, DEFAULT_DIR / SOURCE_COPY, 9, 3)
    assert layers == 210
    # Measured: 0.0215 max (an outlier group, |z| ~ 5), 4.6 % of a step, mean 2.6e-4.
    assert worst <= 0.03 and worst_step <= 0.0625 and mean <= 5e-4
