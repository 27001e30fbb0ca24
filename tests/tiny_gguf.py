"""Tiny GGUF files written the way llama.cpp's convert_hf_to_gguf.py writes them.

``write_tiny_gguf(path, hf_dir, ...)`` turns a tiny HF llama checkpoint (tests/tiny.py)
into a GGUF: metadata under llama.cpp's key names, tensors renamed, q/k rows
permuted for llama.cpp's rotary kernel (its ``permute``), 2-D weights quantized
with ``gguf.quants.quantize`` to the requested type, norms kept F32, and the tiny
byte-level BPE vocabulary with its special tokens marked CONTROL. Tests import
these files and compare against the HF original and against transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

HF_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
BLOCK = {
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's LlamaModel.permute (convert_hf_to_gguf.py), verbatim in effect."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_name(hf_name: str) -> str:
    if hf_name in HF_TO_GGUF:
        return HF_TO_GGUF[hf_name]
    _, _, n, rest = hf_name.split(".", 3)
    return f"blk.{n}.{BLOCK[rest]}"


def hf_state(hf_dir: Path) -> dict[str, np.ndarray]:
    return load_file(str(Path(hf_dir) / "model.safetensors"))


def write_tiny_gguf(
    path: Path,
    hf_dir: Path,
    *,
    qtype: str = "F32",
    embed_qtype: str | None = None,
    pre: str | None = "smollm",
    arch: str = "llama",
    extra_tensors: dict[str, np.ndarray] | None = None,
    drop_tensors: tuple[str, ...] = (),
    tokenizer_meta: dict | None = None,
    raw_tensors: dict[str, tuple[np.ndarray, str]] | None = None,
) -> Path:
    """Write ``path`` from the HF checkpoint ``hf_dir``; matrices in ``qtype``, embedding in ``embed_qtype``.

    ``raw_tensors`` maps a GGUF tensor name to (uint8 blocks, type name) written as they are,
    in place of the HF tensor (for types gguf-py cannot quantize, such as the K-quants).
    """
    import gguf

    cfg = json.loads((Path(hf_dir) / "config.json").read_text())
    state = hf_state(hf_dir)
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny test llama")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(float(cfg.get("rope_theta") or cfg.get("rope_parameters", {}).get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_dimension_count(cfg["hidden_size"] // n_head)
    w.add_vocab_size(cfg["vocab_size"])
    _add_tokenizer(w, Path(hf_dir), pre, tokenizer_meta or {})

    for hf_name, arr in state.items():
        name = gguf_name(hf_name)
        if name in drop_tensors:
            continue
        if raw_tensors and name in raw_tensors:
            blocks, t = raw_tensors[name]
            w.add_tensor(name, blocks, raw_dtype=gguf.GGMLQuantizationType[t])
            continue
        arr = arr.astype(np.float32)
        if name.endswith("attn_q.weight"):
            arr = llama_cpp_permute(arr, n_head)
        elif name.endswith("attn_k.weight"):
            arr = llama_cpp_permute(arr, n_kv)
        t = qtype if arr.ndim == 2 else "F32"
        if name == "token_embd.weight" and embed_qtype:
            t = embed_qtype
        _add(w, name, arr, t)
    for name, arr in (extra_tensors or {}).items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


def _add(w, name: str, arr: np.ndarray, t: str) -> None:
    import gguf

    q = gguf.GGMLQuantizationType[t]
    if t == "F32":
        w.add_tensor(name, arr)
    elif t == "F16":
        w.add_tensor(name, arr.astype(np.float16))
    else:
        w.add_tensor(name, gguf.quants.quantize(arr, q), raw_dtype=q)  # uint8 blocks, shape from bytes


def _add_tokenizer(w, hf_dir: Path, pre: str | None, overrides: dict) -> None:
    tj = json.loads((hf_dir / "tokenizer.json").read_text())
    tc = json.loads((hf_dir / "tokenizer_config.json").read_text())
    vocab = tj["model"]["vocab"]
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    special = {a["id"] for a in tj["added_tokens"] if a["special"]}
    types = [3 if i in special else 1 for i in range(len(tokens))]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    w.add_tokenizer_model(overrides.get("model", "gpt2"))
    if pre is not None:
        w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab[tc["bos_token"]])
    w.add_eos_token_id(vocab[tc["eos_token"]])
    w.add_pad_token_id(vocab[tc["pad_token"]])
    w.add_unk_token_id(vocab[tc["unk_token"]])
    w.add_add_bos_token(False)
    w.add_chat_template(tc["chat_template"])
