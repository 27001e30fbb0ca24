"""GGUF Q4_0 / Q4_1 weights as they are stored, for ``--quantize int4`` to load without re-quantising.

A model chatcli converted from a GGUF with Q4 matrices keeps the file (``source.gguf``, see
:mod:`chatcli.hub.gguf.importer`), and its manifest records where each Q4 tensor lies in it
(``q4_blocks``: HF name -> type, byte offset, shape, rotary heads; written by the importer's
``q4_index`` while the file is open anyway). Loading then needs no GGUF parsing: gguf-py's reader
takes seconds and ~160 MB on the default model's 49k-token vocabulary, while reading by the
index maps the file once. :func:`q4_blocks` returns a mapping from HF weight names to
:class:`~chatcli.model.int4.Q4Blocks`, each unpacked when asked for (peak: one tensor).
Weights of other types (the Q8_0 embedding of the default model, F16 layers) are absent and
the caller quantises those from the float weights as usual.

A block of 32 inputs is ``d`` (float16), for Q4_1 ``m`` (float16), then 16 bytes whose low
nibbles are inputs 0..15 and high nibbles inputs 16..31 (as gguf-py's ``dequantize`` reads
them): ``w = d * q + m`` (Q4_1) or ``w = d * (q - 8)`` (Q4_0). llama.cpp's converter permuted
the rows of q/k for its rotary kernel; whole rows move, so the 4-bit values, d and m are
unpermuted together, exactly as the importer unpermutes the float weights.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch

from chatcli.errors import ModelError
from chatcli.hub.gguf.importer import INT4_TYPES, Q4_INDEX
from chatcli.hub.gguf.llama import unpermute_rotary
from chatcli.hub.manifest import read_manifest
from chatcli.model.int4 import Q4Blocks
from chatcli.regular_file import NotRegularFile, open_regular

BLOCK = 32
_BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20}
_FAULT_AROUND = 1 << 16  # Linux's default fault_around_bytes


def q4_blocks(model_dir: Path) -> "Q4Weights | None":
    """The kept GGUF's Q4 weights of a converted model, or None when it has none."""
    manifest = read_manifest(Path(model_dir)) or {}
    source, index = manifest.get("source"), manifest.get(Q4_INDEX)
    kept = source.get("kept") if isinstance(source, dict) else None
    if not isinstance(kept, str) or Path(kept).name != kept or not isinstance(index, dict) or not index:
        return None
    path = Path(model_dir) / kept
    try:
        with open_regular(path, "kept GGUF") as f:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # the mapping outlives the descriptor
    except (OSError, NotRegularFile, ValueError):  # missing, a FIFO, empty: load as if it were not kept
        return None
    return Q4Weights(path, data, index)


class Q4Weights(Mapping):
    """HF weight name -> Q4Blocks of the mapped GGUF ``mapping``, located by ``index``."""

    def __init__(self, path: Path, mapping: mmap.mmap, index: dict):
        self.path, self.mapping, self.index = path, mapping, index
        self.data = np.frombuffer(mapping, dtype=np.uint8)

    def __getitem__(self, name: str) -> Q4Blocks:
        kind, offset, n, k, heads = self._entry(name)
        size = n * (k // BLOCK) * _BLOCK_BYTES[kind]
        raw = self.data[offset : offset + size].reshape(n, k // BLOCK, -1)
        d = raw[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)  # [N, G]
        m = raw[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32) if kind == "Q4_1" else None
        qs = raw[..., 4:] if kind == "Q4_1" else raw[..., 2:]  # [N, G, 16]
        q = np.concatenate([qs & 15, qs >> 4], axis=2).reshape(n, k)  # inputs 0..15, then 16..31 of each block
        if heads is not None:  # whole rows move: values, d and m together
            q, d = unpermute_rotary(q, heads), unpermute_rotary(d, heads)
            m = None if m is None else unpermute_rotary(m, heads)
        del raw, qs
        self._release(offset, size)
        return Q4Blocks(_tensor(q), _tensor(d), None if m is None else _tensor(m))

    def _release(self, offset: int, size: int) -> None:
        """Drop the pages just read from this process's memory (they are copied out; the file
        stays in the page cache): the whole file is never resident at once. The kernel maps up to
        64 kB of cached pages around each page a read faults in (fault-around), the neighbours'
        included, so the range dropped reaches that far on both sides: without that, 7 MB of the
        default model's file stayed mapped at the load's peak. The mapping is read-only, so every
        page of it is the file's own and dropping one a neighbour needs only maps it again."""
        if not (hasattr(self.mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED")):
            return
        start = max(0, offset - _FAULT_AROUND)
        start -= start % mmap.PAGESIZE
        end = min(len(self.mapping), offset + size + _FAULT_AROUND)
        self.mapping.madvise(mmap.MADV_DONTNEED, start, end - start)

    def _entry(self, name: str) -> tuple[str, int, int, int, int | None]:
        """The index entry of ``name``, checked against the file (the manifest is data too)."""
        e = self.index[name]
        try:
            kind, offset, (n, k), heads = e["type"], e["offset"], e["shape"], e["heads"]
            ok = (kind in INT4_TYPES and all(type(v) is int and v > 0 for v in (n, k)) and type(offset) is int
                  and k % BLOCK == 0 and 0 <= offset and offset + n * (k // BLOCK) * _BLOCK_BYTES[kind] <= self.data.size
                  and (heads is None or (type(heads) is int and heads > 0 and n % (2 * heads) == 0)))
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ModelError(f"{self.path.parent.name}: the record of {name} in the kept GGUF is damaged; "
                             "run `chatcli models pull --force` (or import the GGUF again)")
        return kind, offset, n, k, heads

    def __iter__(self) -> Iterator[str]:
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))
