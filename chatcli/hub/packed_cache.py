"""The packed layout of a float checkpoint, kept on disk so the next load maps it instead of building it.

Packing (:mod:`chatcli.model.packed`) copies every weight of a loaded model into input-major
tensors, q/k/v and gate/up fused: for the default model in float32 that is a transposing copy
of 538 MB, the largest piece of ``chatcli generate``'s start-up after ``import torch`` (issue
18), and in bfloat16 it follows a cast of every weight. The result depends only on the weight
files, the config and the dtype, so the first load on a CPU writes it to
``<cache>/packed/<key>.safetensors``, and later loads map that file (each tensor its own private,
copy-on-write mapping, as a checkpoint is mapped): the model's weights are then views of the same
input-major tensors packing would have built, bit for bit, and :func:`~chatcli.model.packed.pack_group`
finds nothing to copy.

The key is a digest of each weight file's and ``config.json``'s path, size, modification time and
inode, the dtype, torch's version and :data:`LAYOUT`: a file rewritten, replaced or touched gets a new
key, so a changed checkpoint is never served from an old pack. A cache file that fails any check
(header, sizes, every checkpoint key with its shape and dtype, the recorded key) is removed and the
load packs as before, writing a new one; nothing here raises into the load. Only checkpoints up to
:data:`MAX_BYTES` are kept, while the disk keeps 4 times that free, and the folder holds at most
:data:`MAX_TOTAL` (least recently used files go first): each costs the model's size again on disk.

A quantised model (``--quantize int4`` / ``int8``) is kept the same way once built (:func:`store_built`,
:func:`load_built`): its key adds what the transform was (method, group size, the kept GGUF it may read,
:func:`chatcli.model.quant_snapshot.snapshot_tag`), and its file holds the built model's byte blobs (the
two allocations of its quantised buffers, each other tensor on its own, all 64-byte aligned as torch's
int8/int4 CPU kernels need) and the layout that places every buffer in them. A later load maps the file
and gives new quantised layers those views: no GGUF blocks read, nothing quantised, the same model bit
for bit; a file that does not fit is removed and the model built as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import uuid
from collections.abc import Callable
from pathlib import Path

import torch

from chatcli.bounded_json import loads
from chatcli.hub.safetensors_header import parse_header
from chatcli.hub.safetensors_io import build_header, map_each
from chatcli.paths import cache_dir

LAYOUT = 1  # bump when what pack_model builds changes: every older file then misses
MAX_BYTES = 1 << 30  # a larger checkpoint is not kept (its load is not dominated by packing)
MAX_TOTAL = 2 << 30  # the folder's size, least recently used files removed past it
_META = "chatcli_packed"
_ALIGN = 64  # where a built model's byte blobs start in the file (see _save)
_TAGS = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


def cache_key(files: list[Path], config: Path, dtype: torch.dtype, built: str | None = None) -> str:
    """The digest that names the pack of ``files`` (and ``config``) in ``dtype``; ``built`` names what a
    transform made of them (a quantised model: see :func:`store_built`), None for the float pack."""
    ids = []
    for f in [*files, config]:
        st = os.stat(f)
        ids.append([str(Path(f).resolve()), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev])
    what = {"files": ids, "dtype": str(dtype), "torch": torch.__version__, "layout": LAYOUT}
    if built is not None:
        what["built"] = built
    text = json.dumps(what)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _folder() -> Path:
    return cache_dir() / "packed"


def load(key: str, expected: dict[str, tuple[int, ...]], dtype: torch.dtype) -> dict[str, torch.Tensor] | None:
    """The checkpoint's tensors ``expected`` (key -> shape) as views of the cached pack, or None
    (no pack, or a damaged one, which is removed)."""
    try:
        path = _folder() / f"{key}.safetensors"
        if not path.is_file():
            return None
    except OSError:  # no cache folder can be made
        return None
    try:
        state = _read(path, key, expected, dtype)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        state = None
    with contextlib.suppress(OSError):  # a read-only cache folder: read, never cleaned or touched
        if state is None:
            path.unlink(missing_ok=True)
        else:
            os.utime(path)  # used now: the last to be evicted
    return state


def _read(path: Path, key: str, expected: dict[str, tuple[int, ...]], dtype: torch.dtype) -> dict | None:
    header = parse_header(path, what="packed cache file")
    meta = loads((header.metadata or {}).get(_META, "null"))
    if not isinstance(meta, dict) or meta.get("key") != key or not isinstance(meta.get("entries"), dict):
        return None
    entries = meta["entries"]
    if set(entries) != set(expected) or any(e.dtype != _TAGS[dtype] for e in header.tensors.values()):
        return None
    tensors = dict(map_each(path, list(header.tensors), header))
    state = {}
    for name, shape in expected.items():
        stored, col, width, transposed = entries[name]
        t = tensors[stored]
        if col is not None:  # a member of a fused group: columns of its [in, O_total] tensor
            t = t.t()[col : col + width]
        elif transposed:  # stored input-major (a relaid-out embedding): the [out, in] view
            t = t.t()
        if tuple(t.shape) != tuple(shape):
            return None
        state[name] = t
    return state


def store(model: torch.nn.Module, key: str, expected: dict[str, tuple[int, ...]], dtype: torch.dtype) -> None:
    """Write ``model``'s packed tensors under ``key`` (after :func:`~chatcli.model.packed.pack_model`);
    skipped when too large, the disk is short or anything fails (the load goes on either way)."""
    try:
        _write(model, key, expected, dtype)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        pass


def _write(model: torch.nn.Module, key: str, expected: dict[str, tuple[int, ...]], dtype: torch.dtype) -> None:
    from chatcli.model.packed import FusedGroup, _layer_groups

    if dtype not in _TAGS:
        return
    groups = [g for g in [*_layer_groups(model), model.head_group] if isinstance(g, FusedGroup)]
    by_storage = {g.weight_t.untyped_storage().data_ptr(): (f"g{i}", g.weight_t) for i, g in enumerate(groups)}
    params = dict(model.state_dict(keep_vars=True))
    tensors: dict[str, torch.Tensor] = {}
    entries: dict[str, list] = {}
    for name in expected:
        p = params[name].detach()
        if p.dtype != dtype or p.device.type != "cpu":
            return
        group = by_storage.get(p.untyped_storage().data_ptr()) if p.dim() == 2 else None
        if group is not None and p.stride() == (1, group[1].shape[1]):
            stored, base = group
            col = p.storage_offset() - base.storage_offset()
            tensors[stored] = base
            entries[name] = [stored, col, p.shape[0], False]
        elif p.dim() == 2 and p.shape[0] > 1 and p.stride() == (1, p.shape[0]):  # input-major on its own
            tensors[f"p{len(entries)}"] = p.t()
            entries[name] = [f"p{len(entries)}", None, None, True]
        else:
            tensors[f"p{len(entries)}"] = p
            entries[name] = [f"p{len(entries)}", None, None, False]
    _save(key, tensors, _TAGS[dtype], {"key": key, "entries": entries})


def _save(key: str, tensors: dict[str, torch.Tensor], tag: str, meta: dict) -> None:
    """Write ``tensors`` (all of safetensors dtype ``tag``) and ``meta`` as ``<key>.safetensors``, whole or
    not at all; skipped when too large or the disk is short (least recently used files make room)."""
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    folder = _folder()
    folder.mkdir(parents=True, exist_ok=True)
    if size > MAX_BYTES or shutil.disk_usage(folder).free < 4 * size:
        return
    _evict(folder, MAX_TOTAL - size)
    order = list(tensors)
    # Byte blobs start on 64-byte boundaries, as the allocations they were (torch's int8 and int4 CPU
    # kernels crash on weights that are only 8-byte aligned): each is padded to a multiple of 64 bytes,
    # and the header so that the data starts on one.
    pads = {n: (-tensors[n].numel()) % _ALIGN if tag == "U8" else 0 for n in order}
    header = build_header([(n, tag, (tensors[n].numel() + pads[n],) if tag == "U8" else tuple(tensors[n].shape))
                           for n in order], {_META: json.dumps(meta)})
    if tag == "U8":
        header += b" " * (-(8 + len(header)) % _ALIGN)
    tmp = folder / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(header)))
            f.write(header)
            for n in order:
                f.write(memoryview(tensors[n].contiguous().view(torch.uint8).numpy()))
                f.write(bytes(pads[n]))
        os.replace(tmp, folder / f"{key}.safetensors")  # whole or not at all
    finally:
        tmp.unlink(missing_ok=True)


def load_built(key: str, apply: Callable[[dict, dict[str, torch.Tensor]], None]) -> bool:
    """Map the model a transform built, cached under ``key``, and hand it to ``apply(layout, blobs)``
    (:func:`chatcli.model.quant_snapshot.rebuild`); False when there is none, or when the file or
    ``apply`` fails (``ValueError``): the file is then removed and the caller builds the model anew."""
    try:
        path = _folder() / f"{key}.safetensors"
        if not path.is_file():
            return False
    except OSError:
        return False
    try:
        header = parse_header(path, what="packed cache file")
        meta = loads((header.metadata or {}).get(_META, "null"))
        if not isinstance(meta, dict) or meta.get("key") != key or not isinstance(meta.get("built"), dict) \
                or any(e.dtype != "U8" or len(e.shape) != 1 for e in header.tensors.values()):
            raise ValueError("not this model's file")
        blobs = dict(map_each(path, list(header.tensors), header))
        if any(b.data_ptr() % _ALIGN for b in blobs.values()):
            raise ValueError("a blob is not 64-byte aligned")
        apply(meta["built"], blobs)
        done = True
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        done = False
    with contextlib.suppress(OSError):
        if done:
            os.utime(path)
        else:
            path.unlink(missing_ok=True)
    return done


def store_built(model: torch.nn.Module, key: str) -> None:
    """Write the state of ``model`` (quantised, cast and packed) under ``key``, as
    :func:`chatcli.model.quant_snapshot.describe` gives it; skipped when it cannot be described,
    is too large, the disk is short or anything fails (the load goes on either way)."""
    from chatcli.model.quant_snapshot import describe

    try:
        described = describe(model)
        if described is not None:
            blobs, layout = described
            _save(key, blobs, "U8", {"key": key, "built": layout})
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        pass


def _evict(folder: Path, room: int) -> None:
    """Remove the least recently used packs until the folder holds at most ``room`` bytes."""
    files = sorted(folder.glob("*.safetensors"), key=lambda f: f.stat().st_mtime)
    total = sum(f.stat().st_size for f in files)
    for f in files:
        if total <= room:
            break
        total -= f.stat().st_size
        f.unlink(missing_ok=True)
