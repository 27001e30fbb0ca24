"""``--lora PATH[:SCALE]`` and ``/load-lora`` arguments -> an adapter path, name and scale.

* The scale is the part after the last colon when it parses as a number (any
  finite number: 0 and negative included); otherwise the whole text is the path and
  the scale is 1.
* A path (absolute, ``~``, ``./``, ``../``, or containing a separator, or ending in
  ``.safetensors``) is used as given.
* A bare name is looked up, in order, in ``./adapters/``, the demo adapters shipped
  with the package (``chatcli/adapters/``) and the user adapter dir
  (``<data dir>/adapters``); a file in the current directory comes last. A name
  may not leave the folder it was found in, through ``..`` or a symlink: the
  resolved folder and the adapter's files must all lie inside it.
* The adapter's name is its folder name or file stem (other characters become '_').

A missing adapter is an :class:`AdapterError` (exit 1); a bad scale a UsageError.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from chatcli.lora.manager import adapter_name
from chatcli.lora.peft_io import adapter_files
from chatcli.lora.validate import AdapterError, check_contained
from chatcli.errors import UsageError
from chatcli.lora.search_dirs import PACKAGE_ADAPTERS, adapter_dirs, user_adapters_dir  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class AdapterSpec:
    path: Path
    name: str
    scale: float = 1.0
    by_name: bool = False  # found through the search folders


def split_scale(text: str) -> tuple[str, float]:
    """``"x:0.5"`` -> ("x", 0.5); ``"x"`` -> ("x", 1.0); the scale must be finite."""
    text = text.strip()
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            scale = float(tail)
        except ValueError:
            return text, 1.0
        if not math.isfinite(scale):
            raise UsageError(f"invalid adapter scale {tail!r} in {text!r}: use a finite number, e.g. {head}:0.5")
        return head, scale
    if not text or (sep and not head):
        raise UsageError(f"invalid adapter {text!r}: use PATH or NAME, optionally followed by :SCALE")
    return text, 1.0


def looks_like_path(text: str) -> bool:
    return (
        os.path.isabs(text)
        or text.startswith(("~", "./", "../", ".\\", "..\\"))
        or "/" in text
        or os.sep in text
        or text.endswith(".safetensors")
    )


def resolve_adapter(text: str, *, cwd: Path | None = None, dirs: list[Path] | None = None) -> AdapterSpec:
    """Parse and locate one adapter argument (see the module docstring)."""
    target, scale = split_scale(text)
    here = Path.cwd() if cwd is None else Path(cwd)
    if looks_like_path(target):
        path = Path(target).expanduser()
        if not path.is_absolute():
            path = here / path
        if not path.exists():
            raise AdapterError(f"adapter {target} does not exist: check the path")
        return AdapterSpec(path, _name_of(path), scale)
    for folder in dirs if dirs is not None else adapter_dirs(here):
        for candidate in (folder / target, folder / f"{target}.safetensors"):
            if not os.path.lexists(candidate):
                continue
            check_contained(candidate, folder, what=f"adapter {target!r}")
            config, weights = adapter_files(candidate)
            check_contained(config, folder, what=f"adapter {target!r} config")
            check_contained(weights, folder, what=f"adapter {target!r} weights")
            return AdapterSpec(candidate, _name_of(candidate), scale, by_name=True)
    local = here / target
    if local.exists():
        return AdapterSpec(local, _name_of(local), scale)
    searched = ", ".join(str(d) for d in (dirs if dirs is not None else adapter_dirs(here)))
    raise AdapterError(f"no adapter named {target!r}: not a path and not in {searched}")


def _name_of(path: Path) -> str:
    return adapter_name(path.stem if path.suffix == ".safetensors" else path.name)


def preflight(texts: list[str], cwd: Path | None = None) -> list[AdapterSpec]:
    """Resolve ``--lora`` arguments and run every check that needs no model (files, config,
    safetensors header, keys, targets, ranks, NaN/Inf: :func:`~chatcli.lora.peft_io.plan_adapter`)
    before a model is loaded (a typo should not cost a model load). Names must be distinct."""
    from chatcli.lora.peft_io import plan_adapter

    specs = [resolve_adapter(t, cwd=cwd) for t in texts]
    names = [s.name for s in specs]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise UsageError(f"two adapters would both be named {dup!r}: give them different folder names")
    for spec in specs:
        plan_adapter(spec.path, values=True)  # everything loading would refuse that needs no model
    return specs


def load_adapter_specs(manager, texts: list[str] | list[AdapterSpec], cwd: Path | None = None) -> list:
    """Resolve (unless already resolved) and load each ``--lora`` argument; returns their AdapterInfo.

    A failure unloads the adapters this call loaded, so a bad second adapter leaves the
    model as it was.
    """
    specs = [t if isinstance(t, AdapterSpec) else None for t in texts]
    if any(s is None for s in specs):
        specs = preflight([str(t) for t in texts], cwd=cwd)
    loaded: list = []
    try:
        for spec in specs:
            loaded.append(manager.load(spec.path, name=spec.name, scale=spec.scale))
    except BaseException:
        for info in loaded:
            manager.unload(info.name)
        raise
    return loaded
