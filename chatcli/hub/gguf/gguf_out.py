"""Writing a GGUF file: one tensor in memory at a time, and all of it or nothing.

:func:`write_gguf` takes the metadata (a function that adds keys to a
``gguf.GGUFWriter``) and a list of :class:`TensorOut` — each a name, its numpy shape,
the GGML type it is stored as, and a function that produces its float32 values when
its turn comes. Tensor infos are declared from shapes alone
(``gguf.quants.quant_shape_to_byte_shape`` gives a quantized tensor's byte size), so
the header is written first and each tensor is produced, converted (F32, F16, or
quantized by ``gguf.quants.quantize``), written and dropped in turn: the peak is one
tensor, not the model.

The file is written as a hidden temporary sibling of ``out``, flushed, fsynced, then
renamed over ``out`` (and the folder fsynced): a reader sees the old file or the
complete new one, and an export that fails or is interrupted leaves nothing behind.
Disk space is checked before the first byte is written.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import prod
from pathlib import Path

import numpy as np

from chatcli.errors import ModelError
from chatcli.hub.resources import fmt_bytes
from chatcli.paths import fsync_dir

Progress = Callable[[str, int, "int | None"], None]

QUANTIZED = ("Q8_0", "Q4_0")  # the block types gguf-py can quantize that chatcli writes
BLOCK = 32  # elements per block of Q8_0 and Q4_0


@dataclass(frozen=True)
class TensorOut:
    """One tensor of the file: ``values()`` returns float32 in numpy order (``shape``)."""

    name: str
    shape: tuple[int, ...]
    qtype: str  # "F32", "F16", "Q8_0" or "Q4_0"
    values: Callable[[], np.ndarray]

    @property
    def nbytes(self) -> int:
        import gguf

        q = gguf.GGMLQuantizationType[self.qtype]
        return prod(gguf.quants.quant_shape_to_byte_shape(self.shape, q)) if self.qtype in QUANTIZED else \
            prod(self.shape) * (4 if self.qtype == "F32" else 2)


def fits_blocks(shape: Sequence[int]) -> bool:
    """Whether a tensor's rows split into whole Q8_0/Q4_0 blocks (llama.cpp quantizes along rows)."""
    return len(shape) == 2 and shape[-1] % BLOCK == 0


def write_gguf(
    out: Path, arch: str, metadata: Callable[[object], None], tensors: list[TensorOut], progress: Progress | None = None,
    stage: str = "writing tensors",
) -> int:
    """Write ``out`` atomically; return its size in bytes."""
    import gguf

    out = Path(out)
    need = sum(t.nbytes for t in tensors) + (16 << 20)  # + metadata (a vocabulary is a few MB) and alignment
    free = shutil.disk_usage(out.parent).free
    if need > free:
        raise ModelError(f"the GGUF file needs about {fmt_bytes(need)} but {out.parent} has {fmt_bytes(free)} free; "
                         "free some space or write it elsewhere (--out)")
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    writer = gguf.GGUFWriter(tmp, arch)
    try:
        metadata(writer)
        for t in tensors:
            q = gguf.GGMLQuantizationType[t.qtype]
            if t.qtype in QUANTIZED:
                byte_shape = gguf.quants.quant_shape_to_byte_shape(t.shape, q)
                writer.add_tensor_info(t.name, byte_shape, np.dtype(np.uint8), prod(byte_shape), raw_dtype=q)
            else:
                dtype = np.dtype(np.float32 if t.qtype == "F32" else np.float16)
                writer.add_tensor_info(t.name, t.shape, dtype, t.nbytes)
        writer.write_header_to_file(tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for n, t in enumerate(tensors):
            writer.write_tensor_data(_encode(t))
            if progress:
                progress(stage, n + 1, len(tensors))
        assert writer.fout is not None
        for f in writer.fout:
            f.flush()
            os.fsync(f.fileno())
        writer.close()
        os.replace(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        try:
            writer.close()
        finally:
            tmp.unlink(missing_ok=True)
        raise
    return out.stat().st_size


def _encode(t: TensorOut) -> np.ndarray:
    """The bytes of one tensor as stored: float32, float16, or quantized blocks."""
    import gguf

    values = np.ascontiguousarray(t.values(), dtype=np.float32)
    if values.shape != t.shape:
        raise AssertionError(f"{t.name}: produced {values.shape}, declared {t.shape}")
    if not np.isfinite(values).all():
        raise ModelError(f"{t.name} holds NaN or infinite values: the weights are broken, nothing was written")
    if t.qtype == "F32":
        return values
    if t.qtype == "F16":
        with np.errstate(over="ignore"):  # an overflow is refused just below, in words
            half = values.astype(np.float16)
        if not np.isfinite(half).all():
            raise ModelError(f"{t.name} overflows float16 (|w| > 65504): export with --quantize q8_0 instead")
        return half
    return gguf.quants.quantize(values, gguf.GGMLQuantizationType[t.qtype])
