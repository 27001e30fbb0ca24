"""Adapters served as model names, loaded only from allowed folders (vLLM's dynamic LoRA API).

``POST /v1/load_lora_adapter {lora_name, lora_path}`` loads a PEFT adapter under a name;
a request whose ``model`` is that name runs with it. Loaded adapters stay switched off:
a request for the base model runs the base weights, and a request for an adapter
switches it on for that generation only (``AdapterManager.override``, restored after),
so base and adapter requests interleave correctly on the one engine thread.

``lora_path`` is an absolute path or a path relative to one of the allowed folders (a
bare name such as ``pirate``); either way the folder and the adapter's files, symlinks
followed, must lie inside an allowed folder, so a client cannot make the server read
files elsewhere. Methods that touch the model run on the engine worker thread.

The files are the client's choice, so whatever is wrong with them (a config of the wrong
shape, a corrupt safetensors file, a JSON bomb) is a 400 with a one-line reason, and a
refused load leaves the served model and the other adapters as they were.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import ContextManager, Sequence

from chatcli.errors import ChatcliError, UsageError
from chatcli.lora.peft_io import adapter_files
from chatcli.serve.errors import APIError, bad_param, shorten


def default_adapter_dirs() -> list[Path]:
    """chatcli's user adapter folder and the demo adapters shipped with the package."""
    from chatcli.lora.spec import PACKAGE_ADAPTERS, user_adapters_dir

    return [user_adapters_dir(), PACKAGE_ADAPTERS]


class ServedAdapters:
    def __init__(self, manager, allowed: Sequence[Path], base_ids: str | Sequence[str]):
        self.manager = manager
        self.allowed = [Path(os.path.realpath(Path(d).expanduser())) for d in allowed]
        # The names the base model answers to (--served-model-name; the first is its id in replies).
        self.base_ids: tuple[str, ...] = (base_ids,) if isinstance(base_ids, str) else tuple(base_ids)
        self.base_id = self.base_ids[0]
        self._sources: dict[str, str] = {}  # name -> where it came from; replaced whole, never mutated
        self._refresh()

    @property
    def names(self) -> list[str]:
        return list(self._sources)

    def source(self, name: str) -> str:
        return self._sources.get(name, "")

    def _refresh(self) -> None:
        # The routes read this snapshot on the event loop while the worker thread loads and
        # unloads, so it is swapped in one assignment rather than read from the manager.
        self._sources = {n: str(self.manager.adapter(n).source or "") for n in self.manager.names}

    def switch_all_off(self) -> None:
        """Adapters given with ``--lora`` at start-up become addressable names, off for the base."""
        for name in self.manager.active_names():
            self.manager.disable(name)

    def resolve(self, lora_path: str) -> Path:
        """The adapter at ``lora_path``, inside an allowed folder (else a 400 that says so)."""
        given = Path(lora_path).expanduser()
        candidates = [given] if given.is_absolute() else [d / given for d in self.allowed]
        for path in candidates:
            try:
                folder = self._folder_of(path)
                if folder is None or not os.path.lexists(path):
                    continue
                files = adapter_files(path)
            except (OSError, ValueError):  # a name too long for the file system, ...
                continue
            except ChatcliError as e:  # inside an allowed folder, but not an adapter
                raise APIError(e.message, 400, param="lora_path", code="invalid_adapter") from None
            for f in files:  # the files too: a symlink inside may point outside
                if self._folder_of(f) != folder:
                    break
            else:
                return path
        where = ", ".join(map(str, self.allowed)) or "none"
        raise bad_param("lora_path", f"lora_path {shorten(repr(lora_path))} is not an adapter inside the allowed "
                                     f"folders ({where}): put it there or start chatcli serve with --adapter-dir")  # fmt: skip

    def _folder_of(self, path: Path) -> Path | None:
        real = Path(os.path.realpath(path))
        return next((d for d in self.allowed if real == d or d in real.parents), None)

    def load(self, name: str, path: Path) -> None:
        if name in self.base_ids or name in self.manager:
            raise APIError(f"The lora adapter '{name}' has already been loaded: unload it first or pick another name",
                           400, param="lora_name")  # fmt: skip
        try:
            self.manager.load(path, name=name)  # checks everything before it attaches anything
        except UsageError as e:  # the name
            raise bad_param("lora_name", e.message) from None
        except ChatcliError as e:  # the adapter's own diagnosis of its files
            raise APIError(e.message, 400, param="lora_path", code="invalid_adapter") from None
        except Exception as e:  # one the adapter reader did not foresee: still the files' fault
            reason = shorten(" ".join(str(e).split()), 200)
            raise APIError(f"the adapter at {path} cannot be loaded ({type(e).__name__}: {reason}): fix or "
                           "re-save it", 400, param="lora_path", code="invalid_adapter") from None  # fmt: skip
        self.manager.disable(name)
        self._refresh()

    def unload(self, name: str) -> None:
        if name not in self.manager:
            raise APIError(f"The lora adapter '{name}' cannot be found: GET /v1/models lists the loaded ones",
                           404, param="lora_name", code="not_found")  # fmt: skip
        self.manager.unload(name)
        self._refresh()

    def scope(self, name: str | None) -> ContextManager[None]:
        """The block runs with adapter ``name`` on (the base model when None)."""
        return nullcontext() if name is None else self.manager.override(on=[name])
