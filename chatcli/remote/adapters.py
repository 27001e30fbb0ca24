"""LoRA adapters on a remote server, behind the same verbs as the local AdapterManager.

The adapter commands (:mod:`chatcli.chat.lora_commands`) call ``load``, ``unload``,
``list``, ``info``, ``names``, ``set_scale``, ``enable``, ``disable``, ``merge``,
``unmerge`` and ``table``; each server maps them onto what it offers and refuses
the rest with a one-line reason:

* **vLLM** (``--enable-lora``, ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``):
  ``POST /v1/load_lora_adapter {lora_name, lora_path}`` / ``/v1/unload_lora_adapter
  {lora_name}``; a request uses an adapter by naming it as its ``model``, so at most
  one is on at a time, always at scale 1. Adapters started with ``--lora-modules``
  appear in ``/v1/models`` with the base model as ``parent`` and can be switched on.
* **llama.cpp** (``llama-server --lora FILE ...``): adapters are loaded at start;
  ``GET /lora-adapters`` lists ``[{id, path, scale}]`` and ``POST /lora-adapters``
  ``[{id, scale}]`` sets every scale (any number; 0 is off). ``/load-lora`` of one of
  those files switches it on at the given scale; others cannot be added at runtime.
* **chatcli serve** uses vLLM's endpoints.

Paths are the server's: a path that exists here is sent absolute (a server on this
machine finds it), anything else is sent as given.

A control gets the HTTP client and the :class:`RequestModel` it shares with the
engine (:mod:`chatcli.remote.backend`), not the engine itself: switching a vLLM
adapter on changes the model name the engine's next request carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from chatcli.lora.info import adapter_name, check_scale
from chatcli.errors import UsageError
from chatcli.remote.client import Client
from chatcli.remote.errors import RemoteError


@dataclass
class RequestModel:
    """The model name a request carries: the base model's, or on vLLM an adapter's (which selects it)."""

    base: str  # the base model's id on the server
    current: str  # what the next request names; the engine reads it, vLLM's adapter control sets it


@dataclass(frozen=True)
class RemoteAdapterInfo:
    """One row of ``/lora`` for a server's adapter (the server does not tell rank or size)."""

    name: str
    source: str | None  # the path the server loaded
    scale: float
    enabled: bool
    merged: bool = False

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class RemoteSpec:
    """What ``/load-lora ARG`` means on a server: the path it should read, a name, a scale."""

    path: str
    name: str
    scale: float


def resolve_remote(text: str) -> RemoteSpec:
    """``PATH[:SCALE]`` -> a spec; a local adapter name or path becomes an absolute path."""
    from chatcli.lora.spec import resolve_adapter, split_scale
    from chatcli.errors import ChatcliError

    target, scale = split_scale(text)
    try:
        local = resolve_adapter(text)
        return RemoteSpec(str(Path(local.path).resolve()), local.name, local.scale)
    except ChatcliError:
        stem = Path(target.rstrip("/")).name
        return RemoteSpec(target, adapter_name(stem.removesuffix(".safetensors").removesuffix(".gguf")), scale)


class _Control:
    """What both servers share: the client, the row table, the refusals."""

    server = "the server"

    def __init__(self, client: Client, model: RequestModel):
        self.client = client
        self.model = model
        self._cache: object = None  # the server's last listing: the status bar reads it without a request

    resolve = staticmethod(resolve_remote)

    def _listing(self, path: str, fresh: bool = False):
        """GET ``path`` once and keep it; every change (and ``/lora``) asks again."""
        if fresh or self._cache is None:
            self._cache = self.client.get_json(path)
        return self._cache

    @property
    def names(self) -> list[str]:
        return [i.name for i in self.list()]

    def __len__(self) -> int:
        return len(self.list())

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def info(self, name: str) -> RemoteAdapterInfo:
        for i in self.list():
            if i.name == name:
                return i
        raise UsageError(f"no adapter named {name!r} on {self.server}; loaded: {', '.join(self.names) or 'none'}")

    def list(self) -> list[RemoteAdapterInfo]:
        raise NotImplementedError

    def merge(self, name: str) -> None:
        raise UsageError(f"merging is not available on a remote backend: {self.server} applies adapters itself")

    unmerge = merge

    def table(self) -> Table:
        self._cache = None  # /lora shows the server's state now
        table = Table(box=None, padding=(0, 2, 0, 0), header_style="bold",
                      caption=f"adapters on {self.server} ({self.client.base})", caption_justify="left")
        for col in ("name", "scale", "on", "path on the server"):
            table.add_column(col, style="cyan" if col == "name" else None)
        for i in self.list():
            table.add_row(i.name, f"{i.scale:g}", "[green]on[/green]" if i.enabled else "[dim]off[/dim]", i.source or "")
        return table


class VllmAdapters(_Control):
    """vLLM's runtime LoRA endpoints; the adapter in use is the request's model name."""

    server = "the vLLM server"

    def list(self) -> list[RemoteAdapterInfo]:
        listing = self._listing("/models") or {}
        base = self.model.base
        rows = []
        for m in listing.get("data", []) if isinstance(listing, dict) else []:
            if isinstance(m, dict) and m.get("parent") == base and m.get("id") != base:
                on = self.model.current == m["id"]
                rows.append(RemoteAdapterInfo(m["id"], m.get("root"), 1.0 if on else 0.0, on))
        return rows

    def load(self, path: str, name: str | None = None, scale: float = 1.0) -> RemoteAdapterInfo:
        name = name or adapter_name(Path(str(path)).name)
        scale = check_scale(scale)
        if scale not in (0.0, 1.0):
            raise UsageError(f"{self.server} applies adapters at scale 1 only; load without a scale (or :0 to keep it off)")
        self.client.post_json("/load_lora_adapter", {"lora_name": name, "lora_path": str(path)})
        self._cache = None
        if scale:
            self.model.current = name
        return self.info(name)

    def unload(self, name: str) -> None:
        self.info(name)
        self.client.post_json("/unload_lora_adapter", {"lora_name": name})
        self._cache = None
        if self.model.current == name:
            self.model.current = self.model.base

    def enable(self, name: str) -> None:
        """Answers come from this adapter (vLLM serves one per request: any other one goes off)."""
        self.info(name)
        self.model.current = name

    def disable(self, name: str) -> None:
        self.info(name)
        if self.model.current == name:
            self.model.current = self.model.base

    def set_scale(self, name: str, scale: float) -> None:
        scale = check_scale(scale)
        if scale == 1.0:
            return self.enable(name)
        if scale == 0.0:
            return self.disable(name)
        raise UsageError(f"{self.server} applies adapters at scale 1 only; /lora-on and /lora-off switch {name}")

    def selection(self, names: list[str] | None, on: bool, scales: dict[str, float] | None = None) -> dict:
        """Request fields for /compare: the adapter's model name, or the base's (``scales``: the
        adapters an answer was made with, which on vLLM is one at scale 1)."""
        if not on:
            return {"model": self.model.base}
        name = (list(scales or ()) or names or [self.model.current])[0]
        if name == self.model.base:
            raise UsageError("no adapter is on: /lora-on NAME, or /compare NAME")
        self.info(name)
        return {"model": name}


class LlamaCppAdapters(_Control):
    """llama.cpp's adapters, loaded at server start, switched by scale."""

    server = "the llama.cpp server"

    def __init__(self, client: Client, model: RequestModel):
        super().__init__(client, model)
        self._last_scale: dict[int, float] = {}  # what /lora-on restores

    def _rows(self) -> list[dict]:
        rows = self._listing("//lora-adapters")
        return [r for r in rows if isinstance(r, dict) and isinstance(r.get("id"), int)] if isinstance(rows, list) else []

    @staticmethod
    def _name(row: dict) -> str:
        stem = Path(str(row.get("path", ""))).name
        return adapter_name(stem.removesuffix(".gguf").removesuffix(".safetensors")) if stem else f"lora{row['id']}"

    def list(self) -> list[RemoteAdapterInfo]:
        return [RemoteAdapterInfo(self._name(r), r.get("path"), float(r.get("scale", 0.0)), float(r.get("scale", 0.0)) != 0.0)
                for r in self._rows()]

    def _find(self, name: str) -> dict:
        for r in self._rows():
            if self._name(r) == name:
                return r
        self.info(name)  # raises the "no adapter named" error
        raise AssertionError

    def _apply(self, changes: dict[int, float]) -> None:
        # every adapter's scale is sent, so the result does not depend on how the server treats missing ones
        rows = self._rows()
        self.client.post_json("//lora-adapters", [{"id": r["id"], "scale": changes.get(r["id"], float(r.get("scale", 0.0)))} for r in rows])
        self._cache = None

    def load(self, path: str, name: str | None = None, scale: float = 1.0) -> RemoteAdapterInfo:
        scale = check_scale(scale)
        wanted = Path(str(path)).name
        for r in self._rows():
            if str(r.get("path")) == str(path) or Path(str(r.get("path", ""))).name == wanted or self._name(r) == (name or ""):
                self._apply({r["id"]: scale})
                return self.info(self._name(r))
        loaded = ", ".join(str(r.get("path")) for r in self._rows()) or "none"
        raise UsageError(f"{self.server} loads adapters only at start (llama-server --lora FILE); "
                         f"it has: {loaded}")

    def unload(self, name: str) -> None:
        r = self._find(name)
        self._apply({r["id"]: 0.0})  # it stays in the server's memory; llama.cpp cannot drop it

    def enable(self, name: str) -> None:
        r = self._find(name)
        if float(r.get("scale", 0.0)) == 0.0:
            self._apply({r["id"]: self._last_scale.get(r["id"], 1.0)})

    def disable(self, name: str) -> None:
        r = self._find(name)
        if float(r.get("scale", 0.0)) != 0.0:
            self._last_scale[r["id"]] = float(r["scale"])
        self._apply({r["id"]: 0.0})

    def set_scale(self, name: str, scale: float) -> None:
        self._apply({self._find(name)["id"]: check_scale(scale)})

    def selection(self, names: list[str] | None, on: bool, scales: dict[str, float] | None = None) -> dict:
        """Request fields for /compare: a per-request ``lora`` list (the named ones or all off).
        ``scales``: exactly these adapters at these scales, every other one off (all off without)."""
        rows = self._rows()
        if scales is not None:
            for n in scales:
                self._find(n)
            return {"lora": [{"id": r["id"], "scale": scales.get(self._name(r), 0.0) if on else 0.0} for r in rows]}
        chosen = {self._find(n)["id"] for n in names} if names else {r["id"] for r in rows if float(r.get("scale", 0)) != 0}
        if on and not chosen:
            raise UsageError("no adapter is on: /lora-on NAME, or /compare NAME")
        def scale(r: dict) -> float:
            current = float(r.get("scale", 0.0)) or self._last_scale.get(r["id"], 1.0)
            return (current if on else 0.0) if r["id"] in chosen else float(r.get("scale", 0.0))
        return {"lora": [{"id": r["id"], "scale": scale(r)} for r in rows]}


def adapter_control(client: Client, flavor: str, model: RequestModel) -> _Control | None:
    """The adapter control of a ``flavor`` server (vllm, llama.cpp, chatcli), or None when it has none."""
    if flavor == "llama.cpp":
        try:
            client.get_json("//lora-adapters")
        except RemoteError:
            return None
        return LlamaCppAdapters(client, model)
    if flavor in ("vllm", "chatcli"):
        return VllmAdapters(client, model)
    return None
