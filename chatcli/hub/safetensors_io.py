"""Streamed safetensors writing and cheap header checks.

:class:`SafetensorsStreamWriter` writes a ``.safetensors`` file one tensor at a
time: the header (names, dtypes, shapes, offsets) is known before any data, so a
converter never holds more than one dequantized tensor in memory. It hashes what
it writes (sha256 of the whole file and of the header alone) and fsyncs on close.

:func:`read_header` / :func:`check_file` read only the header and the file size,
which is enough to catch a truncated or foreign file without reading the data;
the strict parsing lives in :mod:`chatcli.hub.safetensors_header`. :func:`open_mapped`
is the one way chatcli hands a file to the safetensors library: checked first, the
library's own errors turned into :class:`HeaderError`. :func:`map_each` maps each tensor's
own pages (one header parse for the whole file), so each can be unmapped on its own.

Format (https://github.com/huggingface/safetensors): u64 little-endian header
length N, N bytes of JSON (padded with spaces to a multiple of 8), then the
tensors' bytes, contiguous, in offset order, covering the rest of the file exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from chatcli.bounded_json import JSONError, loads
from chatcli.hub.safetensors_header import HeaderError, parse_header, read_raw
from chatcli.regular_file import NotRegularFile, check_regular, open_regular

if TYPE_CHECKING:
    import torch

# safetensors dtype name -> bytes per element
DTYPE_SIZES = {"F32": 4, "F16": 2, "BF16": 2, "U8": 1}  # U8: the packed cache's byte blobs


@dataclass(frozen=True)
class WrittenFile:
    size: int
    sha256: str
    header_sha256: str


def build_header(entries: list[tuple[str, str, tuple[int, ...]]], metadata: dict[str, str] | None) -> bytes:
    """The padded JSON header for ``entries`` (name, dtype, shape), data in the given order."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, dtype, shape in entries:
        n = DTYPE_SIZES[dtype] * int(np.prod(shape, dtype=np.int64))
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # 8-byte alignment of the data that follows
    return raw


class SafetensorsStreamWriter:
    """Write tensors in the order declared up front; ``close()`` checks all were written."""

    def __init__(
        self,
        path: Path,
        entries: list[tuple[str, str, tuple[int, ...]]],
        metadata: dict[str, str] | None = None,
    ):
        self.path = Path(path)
        self._entries = list(entries)
        self._next = 0
        header = build_header(self._entries, metadata)
        self._header_sha = hashlib.sha256(header).hexdigest()
        self._sha = hashlib.sha256()
        self._f: BinaryIO = open(self.path, "wb")
        self._size = 0
        self._write(struct.pack("<Q", len(header)))
        self._write(header)

    def _write(self, data) -> None:
        view = memoryview(data).cast("B")
        self._f.write(view)
        self._sha.update(view)
        self._size += view.nbytes

    def write(self, name: str, array: np.ndarray) -> None:
        """Write the next tensor; its name, shape and byte size must match the declaration."""
        if self._next >= len(self._entries):
            raise ValueError(f"unexpected tensor {name!r}: all declared tensors were written")
        want_name, dtype, shape = self._entries[self._next]
        if name != want_name or tuple(array.shape) != tuple(shape):
            raise ValueError(f"tensor {name!r} {tuple(array.shape)} written where {want_name!r} {shape} was declared")
        if array.dtype.itemsize != DTYPE_SIZES[dtype]:
            raise ValueError(f"tensor {name!r}: {array.dtype} does not match declared {dtype}")
        if array.dtype.byteorder == ">":  # safetensors is little-endian
            array = array.astype(array.dtype.newbyteorder("<"))
        self._write(np.ascontiguousarray(array))
        self._next += 1

    def close(self) -> WrittenFile:
        if self._next != len(self._entries):
            missing = [e[0] for e in self._entries[self._next:]]
            self.abort()
            raise ValueError(f"{len(missing)} declared tensors not written, first {missing[0]!r}")
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        return WrittenFile(self._size, self._sha.hexdigest(), self._header_sha)

    def abort(self) -> None:
        if not self._f.closed:
            self._f.close()


def read_header(path: Path) -> tuple[dict, bytes, int]:
    """(parsed header, raw header bytes, data start offset); ValueError if it is not safetensors.

    Reads through :func:`~chatcli.hub.safetensors_header.read_raw` (regular files only,
    length checked, nesting bounded) but checks no entry: :func:`check_file` and
    :func:`~chatcli.hub.safetensors_header.parse_header` do.
    """
    raw, start, _ = read_raw(path)
    try:
        header = loads(raw)
    except JSONError as e:
        raise ValueError(f"safetensors header is {e}") from None
    if not isinstance(header, dict):
        raise ValueError("safetensors header is not a JSON object")
    return header, raw, start


def check_file(path: Path) -> str | None:
    """A one-phrase problem with this safetensors file (truncated, bad header), or None if sound.

    The header is checked as strictly as the safetensors library checks it, including that
    the declared data ends exactly at the end of the file, which is what a partial copy or
    an interrupted write breaks. Does not read the data.
    """
    try:
        parse_header(path)
    except OSError as e:
        return f"cannot read {Path(path).name} ({e.strerror or e})"
    except (HeaderError, NotRegularFile) as e:
        return f"{Path(path).name}: {e}"
    return None


# safetensors dtype name -> torch dtype name, for the tensors map_each maps itself
_TORCH_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                 "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}  # fmt: skip


def map_each(path: Path, keys: list[str], header=None) -> Iterator[tuple[str, "torch.Tensor"]]:
    """Each tensor ``keys`` of ``path``, a view of a private memory mapping of its own pages.

    What the library gives when the file is opened once per tensor (a tensor that frees its
    mapping when it dies), for one header parse instead of one per tensor: opening the default
    model's file 272 times parsed its header 272 times (~0.1 s of every load). Mappings are
    copy-on-write (``MAP_PRIVATE``), as the library's: a write never reaches the file. A dtype
    this does not map, or a big-endian machine, goes through :func:`open_mapped`. ``header``: the
    file's :func:`parse_header`, when the caller parsed it already (the size is checked again)."""
    import mmap
    import sys

    import torch

    header = parse_header(path) if header is None else header
    if sys.byteorder != "little" or any(header.tensors[k].dtype not in _TORCH_DTYPES for k in keys):
        with open_mapped(path, checked=True) as f:
            for key in keys:
                yield key, f.get_tensor(key)
        return
    with open_regular(path, "safetensors file") as f:
        if os.fstat(f.fileno()).st_size != header.size:
            raise HeaderError("the file changed while it was read")
        for key in keys:
            e = header.tensors[key]
            dtype = getattr(torch, _TORCH_DTYPES[e.dtype])
            if e.end == e.start:
                yield key, torch.empty(e.shape, dtype=dtype)
                continue
            start = header.data_start + e.start
            base = start - start % mmap.ALLOCATIONGRANULARITY  # a mapping starts on a page boundary
            mapped = mmap.mmap(f.fileno(), header.data_start + e.end - base, offset=base, access=mmap.ACCESS_COPY)
            count = (e.end - e.start) // dtype.itemsize
            # The tensor holds the mapping (through the buffer) and unmaps it when it dies.
            yield key, torch.frombuffer(mapped, dtype=dtype, count=count, offset=start - base).view(e.shape)


@contextmanager
def open_mapped(path: Path, *, checked: bool = False) -> Iterator:
    """The safetensors library's ``safe_open`` (memory-mapped, torch tensors on the CPU), guarded.

    First the header is parsed as strictly as the library parses it (:func:`parse_header`),
    which also refuses a FIFO or device instead of handing it to the library to block on;
    ``checked=True`` (the caller parsed this file a moment ago) only re-checks that it is a
    regular file. A ``SafetensorError`` the library still raises, opening or reading, becomes
    a :class:`HeaderError`: the caller words it, no traceback escapes.
    """
    from safetensors import SafetensorError, safe_open

    if checked:
        check_regular(path, "safetensors file")
    else:
        parse_header(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            yield f
    except SafetensorError as e:
        raise HeaderError(f"the safetensors library refuses it ({' '.join(str(e).split())})") from None
