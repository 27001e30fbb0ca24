"""The standard Hugging Face cache, read as huggingface_hub lays it out, without importing it.

One copy of a model serves transformers, vLLM, mlx-lm and chatcli. The folder is the one
huggingface_hub uses, read from the environment at each call in the same order:
``HF_HUB_CACHE``, else ``HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``, else
``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``.

Layout: ``<cache>/models--ORG--NAME/`` holds ``refs/<revision>`` (a file holding a commit
hash), ``snapshots/<commit>/<files>`` and ``blobs/``. Snapshot files are usually symlinks
into ``blobs/`` but may point anywhere, or be plain files (Windows without symlinks, a copy
made by hand); both are read through, never copied.

Nothing here touches the network: :func:`find_snapshot` answers from the disk alone, so a
cached model loads offline. A snapshot counts as loadable when it has ``config.json``,
``tokenizer.json`` and all of its safetensors weights (a single file, or every shard the
index names). huggingface_hub links a file into the snapshot only once it is complete, so an
interrupted download shows up as missing files, never as a truncated one.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from chatcli.bounded_json import JSONError, loads
from chatcli.model.config import SUPPORTED_MODEL_TYPES
from chatcli.regular_file import NotRegularFile, read_bytes

_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_INDEX = "model.safetensors.index.json"


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder (it may not exist yet)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.environ["HF_HUB_CACHE"])).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.path.expandvars(os.environ["HUGGINGFACE_HUB_CACHE"])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def repo_folder(repo: str) -> Path:
    """``<cache>/models--ORG--NAME`` for the model repository ``ORG/NAME``."""
    return hub_cache_dir() / ("models--" + repo.replace("/", "--"))


@dataclass(frozen=True)
class CachedModel:
    """One model repository in the cache that chatcli can load."""

    repo: str
    commit: str
    path: Path  # the snapshot folder
    size_bytes: int  # the snapshot's files (targets of symlinks), once each
    model_type: str | None


def snapshot_path(repo: str, revision: str | None = None) -> Path | None:
    """The snapshot folder of ``revision`` (a branch, tag or commit; default ``main``), or None."""
    folder = repo_folder(repo)
    snapshots = folder / "snapshots"
    revision = revision or "main"
    if _COMMIT_RE.fullmatch(revision) and (snapshots / revision).is_dir():
        return snapshots / revision
    commit = _read_ref(folder / "refs" / revision)
    if commit and (snapshots / commit).is_dir():
        return snapshots / commit
    if revision == "main" and not (folder / "refs" / "main").exists():
        found = _snapshot_dirs(folder)  # copied in without refs: one snapshot is unambiguous
        if len(found) == 1:
            return found[0]
    return None


def find_snapshot(repo: str, revision: str | None = None) -> Path | None:
    """The snapshot of ``repo`` at ``revision`` when it is complete enough to load, else None."""
    path = snapshot_path(repo, revision)
    return path if path is not None and snapshot_problem(path) is None else None


def snapshot_problem(path: Path) -> str | None:
    """Why the snapshot at ``path`` cannot be loaded yet (a missing file), or None."""
    if not (path / "config.json").is_file():
        return "no config.json"
    if not (path / "tokenizer.json").is_file():
        return "no tokenizer.json"
    index = path / _INDEX
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            return f"{_INDEX} has no weight_map"
        missing = sorted({str(n) for n in weight_map.values() if not (path / str(n)).is_file()})
        return f"missing {', '.join(missing)}" if missing else None
    if (path / "model.safetensors").is_file():
        return None
    return "no safetensors weights"


def cached_models() -> list[CachedModel]:
    """Every model repository in the cache that chatcli can load, by repo id.

    One entry per repository: the ``main`` snapshot when there is one, else the newest. Repos
    of other kinds (datasets, spaces), other architectures, pickle-only weights or unfinished
    downloads are left out.
    """
    root = hub_cache_dir()
    try:
        folders = sorted(p for p in root.iterdir() if p.name.startswith("models--") and p.is_dir())
    except OSError:
        return []
    out = []
    for folder in folders:
        repo = folder.name.removeprefix("models--").replace("--", "/", 1)
        if "/" not in repo:  # a model without an organisation ("gpt2"): not a form chatcli names
            continue
        path = snapshot_path(repo) or next(iter(sorted(_snapshot_dirs(folder), key=_mtime, reverse=True)), None)
        if path is None or snapshot_problem(path) is not None:
            continue
        model_type = _read_json(path / "config.json").get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            continue
        out.append(CachedModel(repo, path.name, path, snapshot_size(path), model_type))
    return out


def snapshot_size(path: Path) -> int:
    """Bytes of the files a snapshot shows (symlinks followed, each target counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for p in path.rglob("*"):
        try:
            st = p.stat()
        except OSError:  # a dangling link
            continue
        if p.is_file() and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def repo_of_snapshot(path: Path) -> str | None:
    """``ORG/NAME`` when ``path`` is a snapshot folder of a model repo in a Hugging Face cache, else None."""
    parts = Path(path).parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3].removeprefix("models--").replace("--", "/", 1)
    return None


def remove_repo(repo: str) -> bool:
    """Delete ``repo``'s folder (every revision, its blobs) from the cache; False if it was not there.

    Targets of symlinks that point outside the repo folder are not deleted: they are not the cache's.
    """
    folder = repo_folder(repo)
    if not folder.is_dir():
        return False
    shutil.rmtree(folder)
    shutil.rmtree(hub_cache_dir() / ".locks" / folder.name, ignore_errors=True)
    return True


def _snapshot_dirs(folder: Path) -> list[Path]:
    try:
        return [p for p in (folder / "snapshots").iterdir() if p.is_dir()]
    except OSError:
        return []


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _read_ref(path: Path) -> str | None:
    try:
        text = read_bytes(path, "ref").decode("ascii", "replace").strip()
    except (OSError, NotRegularFile):
        return None
    return text if _COMMIT_RE.fullmatch(text) else None


def _read_json(path: Path) -> dict:
    try:
        data = loads(read_bytes(path, path.name))
    except (OSError, JSONError, NotRegularFile, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
