"""The manifest of a converted model directory (``chatcli.json``) and its verification.

Every directory chatcli makes (a GGUF import, a pulled default model) carries a
manifest: where the weights came from (description, sha256), the converter and
its version, when, the dtype, the parameter count, and the size and sha256 of
every file written. :func:`verify_model_dir` uses it to tell a complete entry
from a damaged one.

The default check is cheap (stats and the safetensors header, a few KB read):
every listed file present with its recorded size, the weights header as valid as
the safetensors library demands (:mod:`chatcli.hub.safetensors_header`) and
identical (sha256) to the one written, and the header's data extent equal to the
file size. Whatever is wrong is a problem string, never an exception: a damaged
cache entry is reported or rebuilt, not crashed on.
That catches what actually happens to a cache (an interrupted copy, a truncated
or deleted file, a file replaced by another model) in milliseconds, so it can run
on every start. ``full=True`` also re-hashes the weights (about a second per
500 MB), for silent corruption inside the data.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from chatcli.bounded_json import JSONError, loads
from chatcli.hub.safetensors_header import HeaderError, parse_header, read_raw
from chatcli.regular_file import NotRegularFile, open_regular, read_bytes

MANIFEST_NAME = "chatcli.json"
MANIFEST_FORMAT = 1


def write_manifest(model_dir: Path, manifest: dict) -> None:
    """Write ``chatcli.json`` durably (flushed and fsynced)."""
    write_json(Path(model_dir) / MANIFEST_NAME, {"format": MANIFEST_FORMAT, **manifest})


def write_json(path: Path, obj: dict) -> int:
    """Write ``obj`` as indented UTF-8 JSON and fsync; return the byte size."""
    data = (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return len(data)


def read_manifest(model_dir: Path) -> dict | None:
    """The manifest, or None when the directory has none or it is unreadable (a FIFO, bad JSON, ...)."""
    path = Path(model_dir) / MANIFEST_NAME
    try:
        data = loads(read_bytes(path, MANIFEST_NAME))
    except (OSError, JSONError, NotRegularFile):
        return None
    return data if isinstance(data, dict) else None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open_regular(path) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_model_dir(model_dir: Path, *, full: bool = False) -> list[str]:
    """Every problem found with a chatcli-made model directory; an empty list means sound."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return [f"{model_dir} does not exist"]
    manifest = read_manifest(model_dir)
    if manifest is None:
        return [f"{MANIFEST_NAME} is missing or unreadable"]
    if manifest.get("format") != MANIFEST_FORMAT:
        return [f"{MANIFEST_NAME} has format {manifest.get('format')!r}, expected {MANIFEST_FORMAT}"]
    weights = manifest.get("weights")
    files = manifest.get("files")
    records = weights if isinstance(weights, list) else [weights]
    if not records or not all(isinstance(r, dict) for r in records) or not isinstance(files, dict):
        return [f"{MANIFEST_NAME} lacks its 'weights' or 'files' record"]

    problems: list[str] = []
    for name, size in files.items():
        path = model_dir / name
        if not path.is_file():  # a FIFO or a directory in a file's place is as good as missing
            problems.append(f"{name} is missing")
        elif path.stat().st_size != size:
            problems.append(f"{name} is {path.stat().st_size} bytes, expected {size}")
    for record in records:
        problem = _verify_weights(model_dir, record, full)
        if problem:
            problems.append(problem)
    return problems


def _verify_weights(model_dir: Path, record: dict, full: bool) -> str | None:
    """The problem with one safetensors file listed in the manifest, or None."""
    wpath = model_dir / str(record.get("file", ""))
    if not record.get("file") or not wpath.is_file():
        return f"weights file {record.get('file')!r} is missing"
    if wpath.stat().st_size != record.get("size"):
        return f"{wpath.name} is {wpath.stat().st_size} bytes, expected {record.get('size')}"
    try:  # as strictly as the safetensors library reads it: a header it accepts, the loader can map
        header = parse_header(wpath)
    except OSError as e:
        return f"cannot read {wpath.name} ({e.strerror or e})"
    except (HeaderError, NotRegularFile) as e:
        return f"{wpath.name}: {e}"
    if hashlib.sha256(header.raw).hexdigest() != record.get("header_sha256"):
        return f"{wpath.name} header differs from the one written"
    if full and _sha256_or_none(wpath) != record.get("sha256"):
        return f"{wpath.name} content differs from the one written (sha256 mismatch)"
    return None


def _sha256_or_none(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except (OSError, NotRegularFile):
        return None


def weights_record(path: Path, name: str | None = None) -> dict:
    """The manifest record of an existing safetensors file (hashes it whole)."""
    path = Path(path)
    raw, _, _ = read_raw(path)
    return {"file": name or path.name, "size": path.stat().st_size, "sha256": sha256_file(path),
            "header_sha256": hashlib.sha256(raw).hexdigest()}
