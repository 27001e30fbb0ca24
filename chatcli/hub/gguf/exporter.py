"""A Hugging Face-style llama model -> one GGUF file llama.cpp (and Ollama) load and answer with.

``export_gguf(model_dir, tensors, out, quantize=...)`` writes the weights in
``tensors`` (HF names -> float tensors, e.g. a checkpoint with adapters merged) with
``model_dir``'s config and tokenizer, the way llama.cpp's convert_hf_to_gguf.py
writes a llama model:

- names from the one table in :mod:`.llama` (``model.layers.3.self_attn.q_proj.weight``
  -> ``blk.3.attn_q.weight``); a tied LM head is left out, llama.cpp then reads
  ``token_embd.weight``;
- q and k projections permuted per head for llama.cpp's rotary kernel
  (:func:`.llama.permute_rotary`, q with the head count, k with the kv head count);
- ``llama.*`` architecture keys, ``general.*`` (type ``model``, name, file type,
  quantization version, the Hub repository as source url, or as base model when adapters
  were merged), the model's sampling defaults as
  ``general.sampling.*`` (llama.cpp's defaults for the file; the importer reads them back),
  the tokenizer and chat template (:mod:`.vocab_export`);
- types by ``quantize``: ``f16`` stores matrices as F16; ``q8_0`` as Q8_0; ``q4_0`` as
  Q4_0 with the token embedding and output head in Q8_0 (llama.cpp's quantizer gives
  them a finer type too; gguf-py quantizes no K-quant, and the shipped Q4_1 default
  model keeps its embedding in Q8_0 the same way). Norms stay F32. A matrix whose rows
  do not split into 32-element blocks is stored F16, and said so in the result.

Scope: model types ``llama`` and ``mistral`` (llama.cpp's ``llama`` architecture) with
plain or linear-scaled RoPE. Others (biases, q/k norms, Llama-3 RoPE scaling, ...) are
refused by :func:`check_exportable` with one :class:`UsageError` before anything is
read. Writing is streamed and atomic (:mod:`.gguf_out`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chatcli.errors import ModelError, UsageError
from chatcli.hub.gguf.gguf_out import Progress, TensorOut, fits_blocks, write_gguf
from chatcli.hub.gguf.llama import SAMPLING_KEYS, gguf_name, permute_rotary
from chatcli.hub.gguf.vocab_export import VocabMetadata, vocab_metadata
from chatcli.model.config import ModelConfig

QUANTIZE_CHOICES = ("f16", "q8_0", "q4_0")
_FILE_TYPE = {"f16": 1, "q8_0": 7, "q4_0": 2}  # gguf.LlamaFileType.MOSTLY_*
_MATRIX_TYPE = {"f16": "F16", "q8_0": "Q8_0", "q4_0": "Q4_0"}
_EXPORTABLE = ("llama", "mistral")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    size: int
    types: dict[str, int]  # GGML type -> number of tensors
    kept_f16: list[str] = field(default_factory=list)  # matrices whose rows do not fit quantization blocks
    vocab: VocabMetadata | None = None

    def describe_types(self) -> str:
        return ", ".join(f"{n} {t}" for t, n in sorted(self.types.items(), key=lambda kv: -kv[1]))


# chatcli's own --quantize values, and the GGUF type of the same width llama.cpp reads.
_IN_MEMORY = {"int8": "q8_0 (8-bit blocks llama.cpp reads)", "int4": "q4_0 (4-bit blocks llama.cpp reads)"}


def check_quantize(value: str) -> str:
    """One of :data:`QUANTIZE_CHOICES`; anything else (``int8``/``int4`` included) is a one-line UsageError."""
    v = value.strip().lower()
    if v in _IN_MEMORY:
        raise UsageError(f"--quantize {v} is chatcli's in-memory quantization, not a GGUF type: use {_IN_MEMORY[v]}")
    if v not in QUANTIZE_CHOICES:
        raise UsageError(f"invalid --quantize {value!r}: use {', '.join(QUANTIZE_CHOICES)}")
    return v


def check_exportable(config: ModelConfig, raw: Mapping[str, Any]) -> None:
    """Refuse, in one line, a model llama.cpp's ``llama`` architecture cannot express."""
    why = None
    if raw.get("quantization_config"):
        method = raw["quantization_config"].get("quant_method", "?") if isinstance(raw["quantization_config"], dict) else "?"
        why = f"its weights are quantized ({method}); export the float (unquantized) model"
    elif config.model_type not in _EXPORTABLE:
        why = f"it is a {config.model_type} model; GGUF export writes llama-architecture models ({', '.join(_EXPORTABLE)})"
    elif config.attention_bias or config.o_proj_bias or config.mlp_bias:
        why = "it has projection biases, which llama.cpp's llama architecture has no place for"
    elif config.qk_norm:
        why = "it normalises q and k per head, which llama.cpp's llama architecture does not"
    elif config.rope_scaling is not None and config.rope_scaling.rope_type != "linear":
        why = f"its RoPE scaling is {config.rope_scaling.rope_type} (supported: none, linear)"
    if why:
        raise UsageError(f"cannot export this model to GGUF: {why}")


def preflight(model_dir: Path, tokenizer: bool = True) -> ModelConfig:
    """Everything that can refuse an export before any weight is read: the architecture, a
    quantized checkpoint (a ``quantization_config``, or integer tensors in its safetensors
    headers), and the tokenizer unless ``tokenizer=False`` (an adapter file carries none).
    Returns the model's config."""
    from chatcli.hub.checkpoint import read_model_config, weight_files
    from chatcli.hub.safetensors_header import HeaderError, parse_header

    model_dir = Path(model_dir)
    config = read_model_config(model_dir)
    raw = _raw_config(model_dir)
    check_exportable(config, raw)
    for file in weight_files(model_dir):
        try:
            entries = parse_header(file, what="weights").tensors
        except (OSError, HeaderError) as e:
            raise ModelError(f"cannot read {file.name}: {e}; the file is corrupt, re-download the model") from None
        ints = sorted({e.dtype for e in entries.values() if e.dtype not in ("F64", "F32", "F16", "BF16")})
        if ints:
            raise UsageError(f"cannot export this model to GGUF: its weights are quantized ({'/'.join(ints)} tensors "
                             f"in {file.name}); export the float (unquantized) model")
    if tokenizer:
        vocab_metadata(model_dir, config.vocab_size, raw)
    return config


def export_gguf(
    model_dir: Path,
    tensors: Mapping[str, Any],
    out: Path,
    *,
    quantize: str = "q8_0",
    name: str = "",
    description: str = "",
    source_repo: str | None = None,
    adapters: tuple[str, ...] = (),
    sampling: Mapping[str, float | int] | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Write ``tensors`` (HF name -> float tensor) with ``model_dir``'s config and tokenizer to ``out``."""
    from chatcli.hub.checkpoint import read_model_config

    quantize = check_quantize(quantize)
    model_dir = Path(model_dir)
    config = read_model_config(model_dir)
    raw = _raw_config(model_dir)
    check_exportable(config, raw)
    vocab = vocab_metadata(model_dir, config.vocab_size, raw)
    plan, kept = _plan(tensors, config, quantize)

    def metadata(w) -> None:
        w.add_type("model")
        w.add_name(name or model_dir.name)
        if description:
            w.add_description(description)
        if source_repo and not adapters:
            w.add_source_url(f"https://huggingface.co/{source_repo}")
        elif source_repo:  # merged adapters: a fine-tune of that base, as llama.cpp's converter records one
            w.add_base_model_count(1)
            w.add_base_model_name(0, source_repo.rsplit("/", 1)[-1])
            w.add_base_model_organization(0, source_repo.split("/", 1)[0])
            w.add_base_model_repo_url(0, f"https://huggingface.co/{source_repo}")
        for key, value in (sampling or {}).items():  # llama.cpp takes them as its defaults, as does our importer
            if key in SAMPLING_KEYS:
                (w.add_int32 if key == "top_k" else w.add_float32)(SAMPLING_KEYS[key], value)
        w.add_file_type(_FILE_TYPE[quantize])
        w.add_quantization_version(2)  # gguf.GGML_QUANT_VERSION
        _llama_keys(w, config)
        vocab.add_to(w)

    size = write_gguf(Path(out), "llama", metadata, plan, progress, stage=f"writing {quantize} GGUF")
    return ExportResult(Path(out), size, dict(Counter(t.qtype for t in plan)), kept, vocab)


def _llama_keys(w, c: ModelConfig) -> None:
    w.add_vocab_size(c.vocab_size)
    w.add_context_length(c.context_length)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_dimension_count(c.head_dim)
    w.add_rope_freq_base(float(c.rope_theta))
    w.add_layer_norm_rms_eps(float(c.rms_norm_eps))
    if c.head_dim * c.num_attention_heads != c.hidden_size:
        w.add_key_length(c.head_dim)
        w.add_value_length(c.head_dim)
    if c.rope_scaling is not None:  # linear (check_exportable refuses the rest)
        import gguf

        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(c.rope_scaling.factor))


def _plan(tensors: Mapping[str, Any], c: ModelConfig, quantize: str) -> tuple[list[TensorOut], list[str]]:
    """Every tensor with its GGUF name, type and conversion; one error listing what does not fit."""
    heads = {"attn_q.weight": c.num_attention_heads, "attn_k.weight": c.num_key_value_heads}
    unknown = [k for k in tensors if gguf_name(k) is None]
    if unknown:
        raise UsageError(f"cannot export this model to GGUF: llama.cpp's llama has no place for {', '.join(unknown[:3])}"
                         f"{' and more' if len(unknown) > 3 else ''}")
    want = {"model.embed_tokens.weight", "model.norm.weight"} | {
        f"model.layers.{i}.{part}" for i in range(c.num_hidden_layers) for part in (
            "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
            "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight", "input_layernorm.weight",
            "post_attention_layernorm.weight")}  # fmt: skip
    missing = sorted(want - set(tensors))
    if missing:
        raise ModelError(f"cannot export: missing tensors {', '.join(missing[:3])}{' and more' if len(missing) > 3 else ''}")
    plan: list[TensorOut] = []
    kept: list[str] = []
    for hf in sorted(tensors, key=_order):
        name = gguf_name(hf)
        assert name is not None
        shape = tuple(int(d) for d in tensors[hf].shape)
        qtype = "F32"
        if len(shape) == 2:
            qtype = _MATRIX_TYPE[quantize]
            if quantize == "q4_0" and name in ("token_embd.weight", "output.weight"):
                qtype = "Q8_0"
            if qtype != "F16" and not fits_blocks(shape):
                qtype = "F16"
                kept.append(name)
        n_head = next((n for suffix, n in heads.items() if name.endswith(suffix)), None)
        plan.append(TensorOut(name, shape, qtype, _producer(tensors, hf, n_head)))
    return plan, kept


def _producer(tensors: Mapping[str, Any], key: str, n_head: int | None) -> Callable[[], np.ndarray]:
    def values() -> np.ndarray:
        arr = _numpy(tensors[key])
        return permute_rotary(arr, n_head) if n_head is not None else arr

    return values


def _numpy(t: Any) -> np.ndarray:
    if hasattr(t, "detach"):  # a torch tensor (bfloat16 has no numpy dtype: widen first)
        return t.detach().to("cpu").float().numpy()
    return np.asarray(t, dtype=np.float32)


def _order(hf_name: str) -> tuple[int, int, str]:
    """llama.cpp's order: the embedding, the blocks in order, then the final norm and head."""
    if hf_name.startswith("model.layers."):
        return (1, int(hf_name.split(".")[2]), hf_name)
    return (0 if "embed" in hf_name else 2, 0, hf_name)


def _raw_config(model_dir: Path) -> dict:
    from chatcli.bounded_json import JSONError, loads
    from chatcli.regular_file import NotRegularFile, read_bytes

    try:
        data = loads(read_bytes(model_dir / "config.json", "config.json"))
    except (OSError, JSONError, NotRegularFile) as e:
        raise ModelError(f"cannot read {model_dir / 'config.json'}: {e}") from None
    return data if isinstance(data, dict) else {}
