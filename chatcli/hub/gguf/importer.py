"""GGUF file -> Hugging Face-style model directory that chatcli (and transformers) can load.

``import_gguf(gguf_path, out_dir)`` reads the file with ``gguf.GGUFReader``
(memory-mapped), dequantizes each tensor with ``gguf.quants.dequantize``, renames
it to the HF name (table in :mod:`gguf_llama`), undoes the q/k row permutation llama.cpp's
converter applies, and streams it into ``model.safetensors`` one tensor at a
time (peak memory: one tensor). It writes config.json, generation_config.json,
tokenizer.json + tokenizer_config.json (rebuilt by :mod:`gguf_tokenizer`, chat
template carried over) and the manifest ``chatcli.json``.

A file whose matrices are Q4_0/Q4_1 is also kept in the directory as ``source.gguf``
(a hard link when the file system allows it, else a copy; ``keep_source``): ``--quantize
int4`` loads those 4-bit blocks as they are (:mod:`chatcli.hub.gguf.q4_blocks`) instead of
quantising the dequantised weights again. The manifest names it (``source.kept``), lists its
size among the files (a damaged copy makes the entry damaged) and records where each Q4
tensor lies in it (``q4_blocks``), so loading them needs no GGUF parsing.

Everything is written into a temporary sibling of ``out_dir``, fsynced, then
renamed into place, so an interrupted import leaves no directory that loads. An
existing ``out_dir`` is replaced only if it is empty or chatcli made it.
Disk and memory needs are checked first and refused with numbers. The file is
untrusted data: it must be a regular file, and any failure while interpreting its
metadata, tensor table or tensor bytes is one :class:`ModelError` naming the file.

Scope: the ``llama`` architecture (Llama 1/2, SmolLM, TinyLlama, Mistral-style
GQA); tensor types F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the K-quants
Q2_K..Q6_K. Other architectures and types are refused by name.

Shapes: GGUF lists dimensions fastest-first (``[in, out]`` for a weight); numpy
order is the reverse, so a tensor's numpy shape is ``reversed(tensor.shape)``.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from chatcli.hub.gguf.llama import (
    SUPPORTED_TYPES,
    TensorPlan,
    generation_config,
    hf_config,
    llama_shape,
    plan_tensors,
    unpermute_rotary,
)
from chatcli.hub.gguf.tokenizer import tokenizer_config_from_gguf, tokenizer_from_gguf
from chatcli.hub.resources import fmt_bytes, physical_memory
from chatcli.hub.manifest import read_manifest, sha256_file, write_json, write_manifest
from chatcli.paths import fsync_dir, fsync_file, replace_dir
from chatcli.hub.safetensors_io import SafetensorsStreamWriter
from chatcli.errors import ChatcliError, ModelError
from chatcli.regular_file import NotRegularFile, check_regular

CONVERTER = "chatcli.gguf_import"
CONVERTER_VERSION = "1"  # bump when the output for the same input changes
WEIGHTS_FILE = "model.safetensors"
SOURCE_COPY = "source.gguf"  # the kept GGUF (see the module docstring)
# The tensor types --quantize int4 reads as they are (chatcli.hub.gguf.q4_blocks), and the
# manifest key that says where they lie in the kept file.
INT4_TYPES = ("Q4_0", "Q4_1")
Q4_INDEX = "q4_blocks"

Progress = Callable[[str, int, "int | None"], None]

SUPPORTED_ARCHS = ("llama",)
# output dtype name -> (safetensors dtype, bytes per element)
DTYPES = {"float32": ("F32", 4), "bfloat16": ("BF16", 2), "float16": ("F16", 2)}

__all__ = ["import_gguf", "open_gguf", "read_metadata", "check_resources_for", "unpermute_rotary", "SUPPORTED_TYPES"]


def read_metadata(reader) -> dict[str, Any]:
    """All key/value fields of a GGUF file as Python values."""
    meta: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            meta[key] = field.contents()
        except Exception:  # an exotic field type we do not need; keep going
            continue
    return meta


def open_gguf(path: Path):
    """A ``gguf.GGUFReader`` of a regular file (a FIFO or device is refused, never mapped)."""
    import gguf

    try:
        check_regular(path, "GGUF file")
        return gguf.GGUFReader(str(path))
    except FileNotFoundError:
        raise ModelError(f"GGUF file not found: {path}") from None
    except NotRegularFile:
        raise
    except Exception as e:  # the reader raises ValueError/struct errors on foreign or truncated files
        raise ModelError(f"{path} is not a readable GGUF file ({_reason(e)}); re-download it") from None


@contextmanager
def _malformed(path: Path, what: str) -> Iterator[None]:
    """Turn any failure while *interpreting* the file's contents into one ModelError.

    The metadata and tensor table are data from the file: a value of the wrong type or an
    impossible size surfaces as whatever ``int()``, numpy, the gguf reader or the tokenizers
    library raise. Only reading is wrapped, never writing (a full disk is not a bad file)."""
    try:
        yield
    except ChatcliError:
        raise
    except Exception as e:
        raise ModelError(f"{path.name}: {what} ({_reason(e)}); the GGUF file is damaged, re-download it") from None


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{e.__class__.__name__}: {text[:160]}{'...' if len(text) > 160 else ''}"


def import_gguf(
    gguf_path: Path | str,
    out_dir: Path | str,
    *,
    dtype: str = "float32",
    progress: Progress | None = None,
    source: dict | None = None,
    check_resources: bool = True,
    keep_source: bool | None = None,
) -> Path:
    """Convert ``gguf_path`` into the HF-style directory ``out_dir`` (replaced atomically); return it.

    ``keep_source``: keep the GGUF in ``out_dir`` as ``source.gguf``; None (the default) keeps
    it when its matrices are Q4_0/Q4_1, the types ``--quantize int4`` loads directly."""
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if dtype not in DTYPES:
        raise ModelError(f"cannot import to dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and read_manifest(out_dir) is None)):
        # Never swap out (and delete) a folder chatcli did not make.
        raise ModelError(f"{out_dir} already exists and was not made by chatcli: choose a new or empty directory")
    report = progress or (lambda stage, done, total: None)
    reader = open_gguf(gguf_path)
    with _malformed(gguf_path, "unusable metadata or tensor table"):
        meta = read_metadata(reader)
        arch = meta.get("general.architecture")
        if arch not in SUPPORTED_ARCHS:
            raise ModelError(
                f"GGUF architecture {str(arch)[:40]!r} is not supported yet (supported: {', '.join(SUPPORTED_ARCHS)}); "
                "use the model's Hugging Face checkpoint instead"
            )
        shape = llama_shape(meta, reader.tensors)
        plan = plan_tensors(reader.tensors, shape)
        n_params = sum(int(np.prod(item.shape, dtype=object)) for item in plan)  # Python ints: no overflow
        types = {t.tensor_type.name for t in reader.tensors}
    if keep_source is None:
        keep_source = any(t in types for t in INT4_TYPES)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if check_resources:
        check_resources_for(n_params, dtype, out_dir.parent, extra=gguf_path.stat().st_size if keep_source else 0)
    with _malformed(gguf_path, "unusable tokenizer metadata"):
        tokenizer = tokenizer_from_gguf(meta)  # fails fast, before the long part
        if tokenizer.get_vocab_size(with_added_tokens=True) > shape.vocab:
            raise ModelError(
                f"GGUF tokenizer has {tokenizer.get_vocab_size()} tokens but the embedding only {shape.vocab} rows: "
                "the file is inconsistent"
            )
        tok_config = tokenizer_config_from_gguf(meta, tokenizer, shape.context)
        configs = hf_config(shape, meta, dtype), generation_config(meta)

    src = {"kind": "gguf", "file": gguf_path.name, "name": meta.get("general.name"), **(source or {})}
    if "sha256" not in src:
        report("hashing GGUF", 0, 1)
        src["sha256"] = sha256_file(gguf_path)
        report("hashing GGUF", 1, 1)
    src.setdefault("size", gguf_path.stat().st_size)
    src["tensor_types"] = sorted(types)

    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        files = {}
        files["config.json"] = write_json(tmp / "config.json", configs[0])
        files["generation_config.json"] = write_json(tmp / "generation_config.json", configs[1])
        tokenizer.save(str(tmp / "tokenizer.json"))
        fsync_file(tmp / "tokenizer.json")
        files["tokenizer.json"] = (tmp / "tokenizer.json").stat().st_size
        files["tokenizer_config.json"] = write_json(tmp / "tokenizer_config.json", tok_config)
        written = _convert_weights(plan, tmp / WEIGHTS_FILE, dtype, report, gguf_path)
        kept = {}
        if keep_source:
            files[SOURCE_COPY] = _keep(gguf_path, tmp / SOURCE_COPY)
            src["kept"] = SOURCE_COPY
            kept = {Q4_INDEX: q4_index(plan)}
        write_manifest(tmp, {
            "converter": CONVERTER,
            "converter_version": CONVERTER_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": src,
            "architecture": arch,
            "dtype": dtype,
            "parameters": n_params,
            "weights": {"file": WEIGHTS_FILE, "size": written.size, "sha256": written.sha256,
                        "header_sha256": written.header_sha256},
            "files": files,
            **kept,
        })
        fsync_dir(tmp)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _convert_weights(plan: list[TensorPlan], path: Path, dtype: str, report: Progress, source: Path):
    import gguf

    st_dtype, _ = DTYPES[dtype]
    entries = [(i.hf_name, st_dtype, i.shape) for i in plan]
    writer = SafetensorsStreamWriter(path, entries, metadata={"format": "pt", "converted_by": CONVERTER})
    try:
        for n, item in enumerate(plan):
            with _malformed(source, f"tensor {item.tensor.name!r} cannot be dequantized"):
                arr = gguf.quants.dequantize(item.tensor.data, item.tensor.tensor_type)
                arr = np.asarray(arr, dtype=np.float32).reshape(item.shape)
                if item.heads is not None:
                    arr = unpermute_rotary(arr, item.heads)
            writer.write(item.hf_name, _cast(arr, dtype, item.hf_name))
            report("converting tensors", n + 1, len(plan))
        return writer.close()
    except BaseException:
        writer.abort()
        raise


def q4_index(plan: list[TensorPlan]) -> dict[str, dict]:
    """Where each Q4_0/Q4_1 matrix of a GGUF lies: HF name -> {type, offset (bytes from the
    file's start), shape [N, K] (numpy order), heads (llama.cpp's rotary permutation, or None)}."""
    return {
        item.hf_name: {"type": item.tensor.tensor_type.name, "offset": int(item.tensor.data_offset),
                       "shape": [int(n) for n in item.shape], "heads": item.heads}
        for item in plan if item.tensor.tensor_type.name in INT4_TYPES and len(item.shape) == 2
    }


def _keep(source: Path, dest: Path) -> int:
    """Put ``source`` at ``dest``: a hard link (no disk, and a chatcli download that is deleted
    next lives on), else a copy; fsynced. Returns its size."""
    try:
        os.link(source, dest)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(source, dest)
    fsync_file(dest)
    return dest.stat().st_size


def _cast(arr: np.ndarray, dtype: str, name: str) -> np.ndarray:
    if dtype == "float32":
        return arr
    if dtype == "float16":
        out = arr.astype(np.float16)
        if not np.isfinite(out).all() and np.isfinite(arr).all():
            raise ModelError(f"{name} overflows float16; import with dtype bfloat16 or float32")
        return out
    import torch

    # numpy has no bfloat16: round with torch (nearest-even) and keep the raw 16-bit pattern.
    arr = np.require(arr, requirements=["C", "W"])  # torch wants writable memory; copies only a read-only map
    return torch.from_numpy(arr).to(torch.bfloat16).view(torch.int16).numpy()


def check_resources_for(n_params: int, dtype: str, target: Path, extra: int = 0) -> None:
    """Refuse, with numbers, a conversion whose result would not fit on disk or in memory
    (``extra``: bytes of disk needed besides the weights, the kept GGUF)."""
    _, size = DTYPES[dtype]
    need = n_params * size
    free = shutil.disk_usage(target).free
    margin = 64 << 20
    smaller = "" if dtype != "float32" else f", or import with dtype bfloat16 ({fmt_bytes(n_params * 2)})"
    if need + extra + margin > free:
        raise ModelError(f"the {dtype} model needs {fmt_bytes(need + extra)} of disk but {target} has "
                         f"{fmt_bytes(free)} free; free some space{smaller}")
    ram = physical_memory()
    if ram and need > 0.9 * ram:
        raise ModelError(f"the {dtype} model needs {fmt_bytes(need)} of memory but this machine has {fmt_bytes(ram)}"
                         f"{smaller or '; use a smaller model'}")


