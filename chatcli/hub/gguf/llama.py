"""The llama architecture in GGUF: metadata -> config, tensor names -> HF names, layout fixes.

``llama_shape`` reads and validates the architecture numbers (refusing what the
decoder cannot express: MoE, partial rotary, Llama-3.1 ``rope_freqs``, exotic
RoPE scaling); ``plan_tensors`` maps every GGUF tensor to its HF name and numpy
shape, naming every problem at once; ``unpermute_rotary`` undoes llama.cpp's
q/k row permutation; ``hf_config`` / ``generation_config`` write the HF JSON.
The export direction uses the same tables: ``gguf_name`` (HF name -> GGUF name) and
``permute_rotary`` (llama.cpp's permutation, the inverse of ``unpermute_rotary``).
A future architecture (qwen2, ...) gets a sibling module with the same jobs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from chatcli.errors import ModelError

SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_NAMES = {
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.(.+)")


@dataclass(frozen=True)
class LlamaShape:
    """The architecture numbers read from GGUF metadata."""

    n_layer: int
    hidden: int
    ffn: int
    n_head: int
    n_kv: int
    head_dim: int
    vocab: int
    context: int
    rope_theta: float
    rms_eps: float
    rope_scaling: dict | None
    tied: bool

    def expected(self, hf_name: str) -> tuple[int, ...]:
        """The numpy shape the HF tensor ``hf_name`` must have."""
        h, q, kv = self.hidden, self.n_head * self.head_dim, self.n_kv * self.head_dim
        table = {
            "model.embed_tokens.weight": (self.vocab, h), "lm_head.weight": (self.vocab, h), "model.norm.weight": (h,),
            "self_attn.q_proj.weight": (q, h), "self_attn.k_proj.weight": (kv, h), "self_attn.v_proj.weight": (kv, h),
            "self_attn.o_proj.weight": (h, q), "mlp.gate_proj.weight": (self.ffn, h),
            "mlp.up_proj.weight": (self.ffn, h), "mlp.down_proj.weight": (h, self.ffn),
            "input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,),
        }
        return table[hf_name.split(".", 3)[-1] if hf_name.startswith("model.layers.") else hf_name]


@dataclass(frozen=True)
class TensorPlan:
    """One GGUF tensor and where it goes."""

    tensor: Any  # gguf ReaderTensor
    hf_name: str
    shape: tuple[int, ...]  # numpy order
    heads: int | None  # undo llama.cpp's rotary permutation with this many heads


def llama_shape(meta: dict[str, Any], tensors) -> LlamaShape:
    """Validated architecture numbers; refuse what the llama decoder here cannot express."""
    p = "llama."

    def need(key: str):
        if p + key not in meta:
            raise ModelError(f"GGUF metadata lacks {p + key}: the file is incomplete or not a llama model")
        value = meta[p + key]
        if isinstance(value, list):
            raise ModelError(f"GGUF {p + key} varies per layer, which is not supported")
        return value

    if meta.get(p + "expert_count", 0):
        raise ModelError("mixture-of-experts llama GGUF files are not supported; use a dense model")
    names = {t.name for t in tensors}
    if "rope_freqs.weight" in names:
        raise ModelError(
            "this GGUF uses Llama-3.1-style RoPE frequency scaling (rope_freqs), which the importer cannot "
            "recover; use the model's Hugging Face checkpoint instead"
        )
    hidden, n_head = int(need("embedding_length")), int(need("attention.head_count"))
    n_kv = int(meta.get(p + "attention.head_count_kv", n_head))
    head_dim = int(meta.get(p + "attention.key_length", hidden // max(n_head, 1)))
    if int(meta.get(p + "attention.value_length", head_dim)) != head_dim:
        raise ModelError("GGUF key and value head sizes differ, which the llama decoder does not support")
    if int(meta.get(p + "rope.dimension_count", head_dim)) != head_dim:
        raise ModelError("GGUF applies RoPE to part of each head only (partial rotary), which is not supported")
    if n_head % max(n_kv, 1) or head_dim % 2:
        raise ModelError(f"GGUF head counts are inconsistent ({n_head} heads, {n_kv} kv heads, head size {head_dim})")
    scaling = None
    kind = meta.get(p + "rope.scaling.type", "none")
    if kind == "linear":
        scaling = {"rope_type": "linear", "factor": float(meta[p + "rope.scaling.factor"])}
    elif kind not in ("none", None):
        raise ModelError(f"GGUF RoPE scaling {kind!r} is not supported (supported: none, linear)")
    embd = next((t for t in tensors if t.name == "token_embd.weight"), None)
    if embd is None:
        raise ModelError("GGUF file has no token_embd.weight tensor: it is not a complete model")
    return LlamaShape(
        n_layer=int(need("block_count")), hidden=hidden, ffn=int(need("feed_forward_length")),
        n_head=n_head, n_kv=n_kv, head_dim=head_dim, vocab=int(embd.shape[-1]),
        context=int(meta.get(p + "context_length", 2048)), rope_theta=_f32(meta.get(p + "rope.freq_base", 10000.0)),
        rms_eps=_f32(need("attention.layer_norm_rms_epsilon")), rope_scaling=scaling,
        tied="output.weight" not in names,
    )


def plan_tensors(tensors, shape: LlamaShape) -> list[TensorPlan]:
    """Map every GGUF tensor to its HF name and shape; one error listing every problem."""
    import gguf

    problems: list[str] = []
    items: list[TensorPlan] = []
    for t in tensors:
        hf, layer = _hf_name(t.name)
        if hf is None:
            problems.append(f"unknown tensor {t.name}")
            continue
        if layer is not None and layer >= shape.n_layer:
            problems.append(f"tensor {t.name} is beyond block_count {shape.n_layer}")
            continue
        qtype = gguf.GGMLQuantizationType(t.tensor_type).name
        if qtype not in SUPPORTED_TYPES:
            problems.append(f"{t.name} has type {qtype}")
        np_shape = tuple(int(d) for d in reversed([int(x) for x in t.shape]))
        if np_shape != shape.expected(hf):
            problems.append(f"{t.name} has shape {np_shape}, expected {shape.expected(hf)}")
        heads = shape.n_head if t.name.endswith("attn_q.weight") else shape.n_kv if t.name.endswith("attn_k.weight") else None
        items.append(TensorPlan(t, hf, np_shape, heads))
    have = {i.hf_name for i in items}
    want = {"model.embed_tokens.weight", "model.norm.weight"} | {
        f"model.layers.{n}.{v}" for n in range(shape.n_layer) for v in _BLOCK_NAMES.values()
    }
    problems += [f"missing tensor {name}" for name in sorted(want - have)]
    if problems:
        types = [p for p in problems if " has type " in p]
        hint = f" (supported types: {', '.join(SUPPORTED_TYPES)})" if types else ""
        raise ModelError(f"cannot import this GGUF: {'; '.join(problems[:6])}"
                         f"{f' and {len(problems) - 6} more' if len(problems) > 6 else ''}{hint}")
    return sorted(items, key=lambda i: _order(i.hf_name))


def _hf_name(gguf_name: str) -> tuple[str | None, int | None]:
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name], None
    m = _BLOCK_RE.fullmatch(gguf_name)
    if m and m.group(2) in _BLOCK_NAMES:
        return f"model.layers.{m.group(1)}.{_BLOCK_NAMES[m.group(2)]}", int(m.group(1))
    return None, None


def gguf_name(hf_name: str) -> str | None:
    """The GGUF name of the HF tensor ``hf_name`` (None for a tensor llama.cpp's llama has no place for)."""
    for gguf, hf in _GLOBAL_NAMES.items():
        if hf == hf_name:
            return gguf
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", hf_name)
    if m:
        for gguf, hf in _BLOCK_NAMES.items():
            if hf == m.group(2):
                return f"blk.{m.group(1)}.{gguf}"
    return None


def _order(hf_name: str) -> tuple[int, int, str]:
    """embed first, then layers in order, then the final norm and head."""
    if hf_name.startswith("model.layers."):
        return (1, int(hf_name.split(".")[2]), hf_name)
    return (0 if "embed" in hf_name else 2, 0, hf_name)


def unpermute_rotary(w: np.ndarray, n_head: int) -> np.ndarray:
    """Invert llama.cpp's ``permute``: GGUF stores q/k rows per head as interleaved (re, im)
    pairs for its rotary kernel; HF keeps the two halves of each head apart (rotate_half).

    llama.cpp: ``w.reshape(n_head, 2, d // n_head // 2, *rest).swapaxes(1, 2).reshape(w.shape)``.
    """
    # w: [n_head * head_dim, ...]
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permute_rotary(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's ``permute`` (convert_hf_to_gguf.py): the rows of each head of an HF q/k
    projection (two halves, rotate_half) reordered as the interleaved (re, im) pairs its rotary
    kernel expects. ``w.reshape(n_head, 2, d // n_head // 2, *rest).swapaxes(1, 2)``;
    :func:`unpermute_rotary` undoes it. For a LoRA pair only B's rows move (ΔW = B·A)."""
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_config(shape: LlamaShape, meta: dict[str, Any], dtype: str) -> dict:
    tok = "tokenizer.ggml."
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": shape.vocab,
        "hidden_size": shape.hidden,
        "intermediate_size": shape.ffn,
        "num_hidden_layers": shape.n_layer,
        "num_attention_heads": shape.n_head,
        "num_key_value_heads": shape.n_kv,
        "head_dim": shape.head_dim,
        "max_position_embeddings": shape.context,
        "rms_norm_eps": shape.rms_eps,
        "rope_theta": shape.rope_theta,
        "rope_scaling": shape.rope_scaling,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": shape.tied,
        "bos_token_id": meta.get(tok + "bos_token_id"),
        "eos_token_id": meta.get(tok + "eos_token_id"),
        "pad_token_id": meta.get(tok + "padding_token_id"),
        "torch_dtype": dtype,
        "use_cache": True,
    }


# generation_config.json / SamplingParams name -> the GGUF key llama.cpp reads as the file's default
SAMPLING_KEYS = {
    "temperature": "general.sampling.temp", "top_p": "general.sampling.top_p", "top_k": "general.sampling.top_k",
    "min_p": "general.sampling.min_p", "repetition_penalty": "general.sampling.penalty_repeat",
}


def generation_config(meta: dict[str, Any]) -> dict:
    """bos/eos ids (an end-of-turn token distinct from EOS also stops generation) and the sampling
    defaults a file carries (``general.sampling.*``, as chatcli's export writes them)."""
    tok = "tokenizer.ggml."
    eos = meta.get(tok + "eos_token_id")
    stops = [i for i in (eos, meta.get(tok + "eot_token_id"), meta.get(tok + "eom_token_id")) if i is not None]
    stops = list(dict.fromkeys(stops))
    out: dict[str, Any] = {
        "bos_token_id": meta.get(tok + "bos_token_id"),
        "eos_token_id": stops[0] if len(stops) == 1 else stops or None,
    }
    if meta.get(tok + "padding_token_id") is not None:
        out["pad_token_id"] = meta[tok + "padding_token_id"]
    for key, gguf_key in SAMPLING_KEYS.items():
        value = meta.get(gguf_key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = int(value) if key == "top_k" else _f32(value)
    return out


def _f32(x) -> float:
    """A float32 metadata value as the short decimal it was written from (9.99999974738e-06 -> 1e-05)."""
    return float(str(np.float32(x)))
