"""GGUF LoRA files: what llama.cpp's adapter loader reads, and the ΔW it then adds, checked against PEFT's.

llama.cpp adds ``scale · (alpha / r) · B·A`` (``scale · B·A`` when alpha is 0, r from B's
shape) to its stored matrix, whose q/k rows are permuted. Here that sum is rebuilt from the
file with gguf-py and numpy and compared with PEFT's ΔW permuted the way llama.cpp's
converter permutes (tests/tiny_gguf.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from chatcli.errors import UsageError
from chatcli.hub.checkpoint import meta_model, read_model_config
from chatcli.hub.gguf.importer import open_gguf, read_metadata
from chatcli.hub.gguf.lora_file import LoraPair, write_gguf_lora
from chatcli.lora.manager import AdapterManager
from chatcli.lora.peft_io import read_adapter
from chatcli.model.lora_linear import lora_scaling
from tests.lora_helpers import peft_model, save_peft
from tests.tiny_gguf import gguf_name, llama_cpp_permute

gguf = pytest.importorskip("gguf")


def _pairs(adapter) -> dict[str, LoraPair]:
    return {m: LoraPair(A=p.A.numpy(), B=p.B.numpy(), alpha=p.alpha, scaling=lora_scaling(p.r, p.alpha, adapter.use_rslora))
            for m, p in adapter.modules.items()}


def _llama_cpp_delta(path, target: str) -> np.ndarray:
    """ΔW as llama.cpp computes it from the file at adapter scale 1."""
    reader = open_gguf(path)
    alpha = read_metadata(reader)["adapter.lora.alpha"]
    t = {x.name: x for x in reader.tensors}
    a, b = t[f"{target}.lora_a"], t[f"{target}.lora_b"]
    A = np.asarray(a.data, dtype=np.float32).reshape(tuple(reversed([int(x) for x in a.shape])))
    B = np.asarray(b.data, dtype=np.float32).reshape(tuple(reversed([int(x) for x in b.shape])))
    r = B.shape[1]  # ggml's b->ne[0]
    return (alpha / r if alpha else 1.0) * (B @ A)


@pytest.mark.parametrize("kwargs", [
    dict(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"]),
    dict(r=4, lora_alpha=8, use_rslora=True, target_modules=["q_proj", "k_proj"],
         rank_pattern={"layers.1.self_attn.k_proj": 2}, alpha_pattern={"q_proj": 3}),
])
def test_delta_w_is_pefts_permuted(tiny_model_dir, tmp_path, kwargs):
    pm = peft_model(tiny_model_dir, **kwargs)
    folder = save_peft(pm, tmp_path / "ad")
    config = read_model_config(tiny_model_dir)
    adapter = read_adapter(folder, AdapterManager(meta_model(config)).shapes)
    size, alpha = write_gguf_lora(tmp_path / "ad.gguf", _pairs(adapter), config, name="ad")
    meta = read_metadata(open_gguf(tmp_path / "ad.gguf"))
    assert meta["general.type"] == "adapter" and meta["adapter.type"] == "lora"
    assert meta["general.architecture"] == "llama" and meta["adapter.lora.alpha"] == alpha
    plain = "use_rslora" not in kwargs
    assert alpha == (8.0 if plain else 0.0)  # per-module factors are folded into B
    assert size > 0 and len(adapter.modules) == sum(1 for n, _ in pm.named_parameters() if "lora_A" in n)
    for module, p in adapter.modules.items():
        lin = pm.get_submodule(f"base_model.model.{module}")
        want = lin.get_delta_weight("default").detach().numpy()  # PEFT's own ΔW (scaling included)
        target = gguf_name(f"{module}.weight")
        if target.endswith("attn_q.weight"):
            want = llama_cpp_permute(want, config.num_attention_heads)
        elif target.endswith("attn_k.weight"):
            want = llama_cpp_permute(want, config.num_key_value_heads)
        np.testing.assert_allclose(_llama_cpp_delta(tmp_path / "ad.gguf", target), want, rtol=1e-5, atol=1e-6)


def test_lm_head_lora_is_refused(tiny_model_dir, tmp_path):
    config = read_model_config(tiny_model_dir)
    pair = LoraPair(A=np.zeros((2, 64), np.float32), B=np.zeros((config.vocab_size, 2), np.float32), scaling=1.0, alpha=2.0)
    with pytest.raises(UsageError, match="not on lm_head"):
        write_gguf_lora(tmp_path / "x.gguf", {"lm_head": pair}, config)
    assert list(tmp_path.iterdir()) == []


def test_tensor_names_and_shapes_llama_cpp_checks(tiny_model_dir, tmp_path):
    """llama_adapter_lora_init: a->ne[0] == W's ne[0] (in), b->ne[1] == W's ne[1] (out), a->ne[1] == b->ne[0] (r)."""
    folder = save_peft(peft_model(tiny_model_dir, r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"]), tmp_path / "a")
    config = read_model_config(tiny_model_dir)
    adapter = read_adapter(folder, AdapterManager(meta_model(config)).shapes)
    write_gguf_lora(tmp_path / "a.gguf", _pairs(adapter), config)
    t = {x.name: [int(d) for d in x.shape] for x in open_gguf(tmp_path / "a.gguf").tensors}
    assert t["blk.0.attn_q.weight.lora_a"] == [64, 4] and t["blk.0.attn_q.weight.lora_b"] == [4, 64]
    assert t["blk.1.ffn_down.weight.lora_a"] == [128, 4] and t["blk.1.ffn_down.weight.lora_b"] == [4, 64]
    assert len(t) == 8
