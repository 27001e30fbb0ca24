"""Finding plugins without importing them: the entry-point group and the user plugin folder.

:func:`discover` lists a :class:`Candidate` per plugin (entry points of
``chatcli.plugins`` first, then ``<config dir>/plugins/*.py`` not starting with
``_``); nothing is imported until the manager calls ``Candidate.load`` for a
selected one. User files are imported as ``chatcli_user_plugins.<stem>``.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatcli.plugins.settings import user_plugin_dir

GROUP = "chatcli.plugins"
USER_PREFIX = "chatcli_user_plugins"


@dataclass
class Candidate:
    """A plugin found but not imported yet: ``load()`` imports it and returns the object to register."""

    name: str
    source: str
    version: str | None
    load: Callable[[], object]


def discover(entry_points: Iterable[Any] | None = None, user_dir: Path | None = None) -> list[Candidate]:
    """The plugins found: ``entry_points`` (default: the installed group's) and the files in ``user_dir``."""
    out: list[Candidate] = []
    seen: set[tuple[str, str]] = set()
    eps = entry_points if entry_points is not None else _group_entry_points()
    for ep in eps:
        key = (ep.name, ep.value)
        if key in seen:  # an editable install can list a distribution twice
            continue
        seen.add(key)
        dist = getattr(ep, "dist", None)
        dist_name = getattr(dist, "name", None) or getattr(getattr(dist, "metadata", {}), "get", lambda k: None)("Name")
        out.append(Candidate(
            ep.name, f"entry point ({dist_name or ep.value})", getattr(dist, "version", None), ep.load,
        ))
    folder = user_dir if user_dir is not None else user_plugin_dir()
    if folder.is_dir():
        for path in sorted(folder.glob("*.py")):
            if path.stem.startswith("_"):
                continue
            out.append(Candidate(path.stem, f"user file {path}", None, lambda p=path: _import_file(p)))
    return out


def _group_entry_points() -> list:
    from importlib.metadata import entry_points

    return list(entry_points(group=GROUP))


def _import_file(path: Path) -> object:
    name = f"{USER_PREFIX}.{path.stem}"
    if USER_PREFIX not in sys.modules:  # a namespace parent, so pickling and dataclasses work
        import types

        pkg = types.ModuleType(USER_PREFIX)
        pkg.__path__ = []  # type: ignore[attr-defined]
        sys.modules[USER_PREFIX] = pkg
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
