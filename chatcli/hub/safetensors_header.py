"""A safetensors header, parsed as strictly as the safetensors library parses it.

The format (https://github.com/huggingface/safetensors): a u64 little-endian header
length N (at most 100 000 000), N bytes of UTF-8 JSON, then the tensors' bytes. The
library (the Rust ``safetensors`` crate, through serde) accepts a header only when:

* the JSON is one object; ``__metadata__`` is absent, null, or an object of string
  values; every other key maps to an object with ``dtype`` (a known name), ``shape``
  (a list of integers) and ``data_offsets`` (exactly two integers); every integer is
  a JSON integer (``4``, not ``4.0``, ``"4"``, ``true``, ``NaN``) in 0..2**64-1;
* sorted by offsets, the tensors are contiguous from byte 0, each spans exactly
  elements × dtype size bytes (no overflow on the way), and the last one ends at
  the end of the file.

:func:`parse_header` checks all of that (and a little more: no key twice, nesting at
most :data:`~chatcli.bounded_json.MAX_DEPTH` deep, dimensions that fit torch's int64,
no sub-byte dtypes), reading the header only, through
:func:`~chatcli.regular_file.open_regular` (a FIFO is refused, not waited on). Any
header it accepts, the library opens; whatever it refuses is one
:class:`HeaderError` phrase for the caller to wrap in its own error.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass

from chatcli.bounded_json import JSONError, loads
from chatcli.regular_file import open_regular

MAX_HEADER = 100_000_000  # the library's MAX_HEADER_SIZE
_U64 = 2**64 - 1
_I64 = 2**63 - 1  # torch shapes are int64: a larger dimension makes get_tensor raise TypeError
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # when present, every string is checked for a lone one

# Every dtype name the library knows -> bits per element. Sub-byte types (F4, F6) are
# refused: nothing chatcli loads uses them, and their byte spans need rules of their own.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
    "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}  # fmt: skip


class HeaderError(ValueError):
    """A header the library would refuse (or chatcli cannot use); ``str()`` says why, one phrase."""


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # data offsets relative to the end of the header
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: dict[str, TensorEntry]  # in header order
    metadata: dict[str, str] | None
    raw: bytes  # the N header bytes, as stored (hashed by the manifest)
    data_start: int  # 8 + N
    size: int  # of the whole file


def read_raw(path: str | os.PathLike, what: str = "safetensors file") -> tuple[bytes, int, int]:
    """(raw header bytes, data start, file size), after the length checks; HeaderError otherwise."""
    with open_regular(path, what) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise HeaderError("file shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER:
            raise HeaderError(f"header length {n} is above the format's limit of {MAX_HEADER}")
        if 8 + n > size:
            raise HeaderError(f"header length {n} runs past the end of the {size}-byte file")
        raw = f.read(n)
    if len(raw) < n:
        raise HeaderError("file ends inside the safetensors header")
    return raw, 8 + n, size


def parse_header(path: str | os.PathLike, what: str = "safetensors file") -> SafetensorsHeader:
    """The checked header of ``path`` (see the module docstring); HeaderError if the library would refuse it."""
    raw, data_start, size = read_raw(path, what)
    try:
        doc = loads(raw, unique_keys=True, finite=True, parse_int=_json_int)
    except JSONError as e:
        raise HeaderError(f"header is {e}" if str(e).startswith(("not ", "nested")) else f"header: {e}") from None
    if _SURROGATE_ESCAPE.search(raw) and not _strings_are_unicode(doc):
        raise HeaderError("header has a string with an unpaired surrogate escape (not valid UTF-8)")
    if not isinstance(doc, dict):
        raise HeaderError("header is not a JSON object")
    metadata = doc.get("__metadata__")
    if metadata is not None and (
        not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values())
    ):
        raise HeaderError("__metadata__ must map names to strings")
    tensors = {name: _entry(name, info) for name, info in doc.items() if name != "__metadata__"}
    _check_layout(tensors.values(), size - data_start)
    return SafetensorsHeader(tensors, metadata, raw, data_start, size)


def _entry(name: str, info: object) -> TensorEntry:
    if not isinstance(info, dict):
        raise HeaderError(f"entry for tensor {name!r} is not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise HeaderError(f"tensor {name!r} has unknown dtype {dtype!r}")
    if DTYPE_BITS[dtype] % 8:
        raise HeaderError(f"tensor {name!r} has sub-byte dtype {dtype}, which chatcli does not read")
    if not isinstance(shape, list) or not all(_uint(d, _I64) for d in shape):
        raise HeaderError(f"tensor {name!r} has shape {_short(shape)}: dimensions must be non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_uint(o, _U64) for o in offsets):
        raise HeaderError(f"tensor {name!r} has data_offsets {_short(offsets)}: two non-negative integers expected")
    return TensorEntry(name, dtype, tuple(shape), offsets[0], offsets[1])


def _check_layout(entries, data_len: int) -> None:
    """The library's validate(): contiguous from 0 in offset order, exact spans, ending at the file's end."""
    cursor = 0
    for e in sorted(entries, key=lambda t: (t.start, t.end)):
        if e.start < cursor:
            raise HeaderError(f"tensor {e.name!r} overlaps the tensor before it")
        if e.start > cursor:
            raise HeaderError(f"a gap of {e.start - cursor} bytes before tensor {e.name!r}")
        if e.end < e.start:
            raise HeaderError(f"tensor {e.name!r} has offsets [{e.start}, {e.end}]")
        want = DTYPE_BITS[e.dtype] // 8
        for d in e.shape:  # the library's checked multiplication: overflow is refused even if a 0 follows
            want *= d
            if want > _U64:
                raise HeaderError(f"tensor {e.name!r} shape {list(e.shape)} overflows the byte count")
        if e.end - e.start != want:
            raise HeaderError(f"tensor {e.name!r} {e.dtype} {list(e.shape)} needs {want} bytes but spans {e.end - e.start}")
        cursor = e.end
    if cursor != data_len:
        if cursor > data_len:
            raise HeaderError(f"the tensors end at byte {cursor} but the data section has {data_len}; the file is truncated")
        raise HeaderError(f"{data_len - cursor} bytes after the last tensor")


def _json_int(text: str) -> int | float:
    # serde reads "-0" as the float -0.0, which is no usize; Python would make it the integer 0.
    return -0.0 if text == "-0" else int(text)


def _strings_are_unicode(doc: object) -> bool:
    """No string (key or value, at any depth) holds a lone surrogate, which serde refuses."""
    stack = [doc]
    while stack:  # iterative: no recursion on input
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(node, dict):
            stack.extend(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return True


def _uint(v: object, top: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= top


def _short(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."

