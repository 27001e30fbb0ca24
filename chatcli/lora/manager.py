"""The adapters of one loaded model: load, unload, scale, switch, merge, list.

One manager per model, created before any layer is wrapped (it records the original
modules then): an engine's is ``LoadedModel.adapters``, built with the engine; a bare
model (export, training, tests) gets ``AdapterManager(model)``, kept by its caller.
Loading reads and checks the adapter completely (:mod:`~chatcli.lora.peft_io`,
:mod:`~chatcli.lora.validate`) before
wrapping any layer, so a bad adapter leaves the model exactly as it was; a good one
wraps the targeted layers in :class:`~chatcli.model.lora_linear.LoRALinear` in
milliseconds, without touching the base weights. Unloading an adapter that was
never merged restores the base model bit-exactly. A layer holds its wrapper only
while the wrapper has work (an adapter on, unmerged, with a non-zero scale);
otherwise the original module object is back in place, so adapters that are off
or merged cost nothing per token.

State changes go through ``guard`` (the engine's "no answer is streaming" guard,
so a load during an answer is refused with a message), bump :meth:`weights_version`
(the engine hands it to its generator: a KV cache made under another version holds
keys and values of other weights, so it is dropped) and are announced to
``on_change`` callbacks.

:meth:`AdapterManager.override` / :meth:`disabled` switch adapters temporarily and
restore everything bit-exactly (see :mod:`chatcli.lora.override`).

This module holds the manager's state, its queries, loading, unloading and saving; the
switches (scale, on/off, merge) are :mod:`chatcli.lora.switches` and the layers' wrappers
(which module is in place, W0 under merged adapters) :mod:`chatcli.lora.layer_slots`, both
mixins of :class:`AdapterManager`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ContextManager

import torch
from torch import nn

from chatcli.lora.info import (  # noqa: F401  (re-exported)
    _NAME,
    AdapterInfo,
    adapter_name,
    check_scale,
    describe,
    sort_targets,
)
from chatcli.lora.layer_slots import LayerSlots
from chatcli.lora.override import TemporarySwitches
from chatcli.lora.switches import AdapterSwitches
from chatcli.model.lora_linear import LoRALinear, LoRAPair, Replacement, ReplacedModule
from chatcli.lora.validate import AdapterError, ModuleShapes, check_against_model, max_rank_limit
from chatcli.model.qlinear import QUANTIZED_MODULES, QuantizedLinear, weight_shape
from chatcli.errors import UsageError

if TYPE_CHECKING:
    from chatcli.hub.base_ref import BaseRef
    from chatcli.lora.peft_io import LoRAAdapter

REPLACEABLE = ("lm_head", "model.embed_tokens")


@dataclass
class _Loaded:
    adapter: LoRAAdapter
    scale: float
    enabled: bool = True
    merged: bool = False


class AdapterManager(TemporarySwitches, AdapterSwitches, LayerSlots):
    """Named LoRA adapters on one :class:`~chatcli.model.model.DecoderLM`: state, queries, loading
    and saving here; switches in lora/switches.py, the layers' wrappers in lora/layer_slots.py,
    temporary switches in lora/override.py."""

    def __init__(
        self,
        model: nn.Module,
        *,
        max_rank: int | None = None,
        guard: Callable[[], ContextManager[Any]] | None = None,
        on_change: Iterable[Callable[[], None]] = (),
        base: BaseRef | None = None,
    ):
        if any(isinstance(m, (LoRALinear, ReplacedModule)) for m in model.modules()):
            raise ValueError("the model already has adapter layers: use the manager that wrapped them")
        self.model = model
        # The base model as other tools name it (hub.base_ref): what a saved adapter records.
        self.base = base
        self.max_rank = max_rank_limit() if max_rank is None else max_rank
        self.guard = guard or nullcontext
        self.on_change: list[Callable[[], None]] = list(on_change)
        self._adapters: dict[str, _Loaded] = {}
        self._version = 0  # bumped whenever the effective weights change (see weights_version)
        self._wrappers: dict[str, nn.Module] = {}  # module name -> its LoRALinear / ReplacedModule
        self._norms: dict[tuple[str, torch.dtype | str], float] = {}  # (module, dtype or method) -> ‖W0‖_F (base_norm)
        # The original modules, by name, with where they hang (parent, attribute).
        self._slots: dict[str, tuple[nn.Module, str, nn.Module]] = {}
        for name, module in model.named_modules():
            for attr, child in module.named_children():
                full = f"{name}.{attr}" if name else attr
                if isinstance(child, (nn.Linear, QuantizedLinear)) or full in REPLACEABLE:
                    self._slots[full] = (module, attr, child)
        # Every parameter of the base model, by checkpoint key, via its owning module (for export).
        self._params: dict[str, tuple[nn.Module, str]] = {
            f"{mname}.{pname}" if mname else pname: (m, pname)
            for mname, m in model.named_modules()
            for pname, _ in m.named_parameters(recurse=False)
        }
        seen: set[int] = set()
        self.base_params = 0
        for p in model.parameters():
            if id(p) not in seen:  # tied weights once
                seen.add(id(p))
                self.base_params += p.numel()
        self.shapes = ModuleShapes(
            linears={n: (c.out_features, c.in_features) for n, (_, _, c) in self._slots.items()
                     if isinstance(c, (nn.Linear, QuantizedLinear))},
            replaceable={n: weight_shape(self._slots[n][2]) for n in REPLACEABLE if n in self._slots},
        )

    # --- queries -------------------------------------------------------------------------------

    def __contains__(self, name: str) -> bool:
        return name in self._adapters

    def __len__(self) -> int:
        return len(self._adapters)

    @property
    def names(self) -> list[str]:
        return list(self._adapters)

    def weights_version(self) -> int:
        """A number that changes whenever the model's effective weights change (a load, unload,
        scale, switch, merge or temporary override): a KV cache filled under another holds
        keys and values of other weights."""
        return self._version

    def active_names(self) -> list[str]:
        return [n for n, a in self._adapters.items() if a.enabled and a.scale != 0.0]

    def adapter(self, name: str) -> LoRAAdapter:
        return self._get(name).adapter

    def info(self, name: str) -> AdapterInfo:
        st = self._get(name)
        return describe(name, st.adapter, st.scale, st.enabled, st.merged, self.base_params)

    def list(self) -> list[AdapterInfo]:
        return [self.info(n) for n in self._adapters]

    # --- loading -------------------------------------------------------------------------------

    def load(self, path: str | Path, name: str | None = None, scale: float = 1.0) -> AdapterInfo:
        """Read, check and attach the adapter at ``path`` (PEFT folder or .safetensors file)."""
        p = Path(path).expanduser()
        name = self._new_name(name, p.stem if p.suffix == ".safetensors" else p.name)
        scale = check_scale(scale)
        # PEFT I/O (and the regex module its config checks use) loads with the first adapter:
        # a run without --lora does not pay for it at start-up.
        from chatcli.lora.peft_io import read_adapter

        with self.guard():
            dtype, device = self._dtype_device()
            adapter = read_adapter(p, self.shapes, max_rank=self.max_rank, dtype=dtype, device=device)
            self._check_base_copies(adapter)
            self._attach(name, adapter, scale)
        self._changed()
        return self.info(name)

    def add(self, adapter: LoRAAdapter, name: str, scale: float = 1.0) -> AdapterInfo:
        """Attach an in-memory adapter (fine-tuning, tests); checked like a file."""
        name = self._new_name(name, name)
        scale = check_scale(scale)
        source = adapter.source or f"adapter {name}"
        shapes = {m: (tuple(t.A.shape), tuple(t.B.shape), t.r) for m, t in adapter.modules.items()}
        saved = {m: (tuple(p["weight"].shape), m) for m, p in adapter.saved.items()}
        check_against_model(shapes, saved, self.shapes, source, self.max_rank)
        self._check_base_copies(adapter)
        with self.guard():
            self._attach(name, adapter, scale)
        self._changed()
        return self.info(name)

    def _check_base_copies(self, adapter: LoRAAdapter) -> None:
        for module, saved in adapter.expected_base.items():
            layer = self._slots[module][2]
            if isinstance(layer, QUANTIZED_MODULES):  # same base weights quantise to the same weights
                same = layer.matches(saved)
            else:
                own = layer.weight
                same = torch.equal(saved.to(device=own.device, dtype=own.dtype), own.detach())
            if not same:
                raise AdapterError(
                    f"{adapter.source}: its copy of {module} differs from this model's (a resized vocabulary or "
                    "another base model); chatcli only loads adapters for the unchanged base"
                )

    def _new_name(self, name: str | None, fallback: str) -> str:
        if name is None:
            name = adapter_name(fallback)
        elif not _NAME.match(name):
            raise UsageError(f"invalid adapter name {name!r}: use letters, digits, '_' and '-' (at most 64)")
        if name in self._adapters:
            raise UsageError(f"an adapter named {name!r} is already loaded: unload it or choose another --name")
        return name

    def _attach(self, name: str, adapter: LoRAAdapter, scale: float) -> None:
        done: list[str] = []
        try:
            for module, m in adapter.modules.items():
                wrapper = self._wrapper(module, LoRALinear)
                wrapper.add(name, LoRAPair(m.A, m.B, m.alpha, rslora=adapter.use_rslora, scale=scale))
                done.append(module)
            for module, parts in adapter.saved.items():
                wrapper = self._wrapper(module, ReplacedModule)
                wrapper.add(name, Replacement(parts["weight"], parts.get("bias"), scale=scale))
                done.append(module)
        except Exception:
            for module in done:  # leave the model as it was
                self._detach(module, name)
            raise
        # Share the tensors the layers hold, so a saved adapter is what the model runs.
        for module, m in adapter.modules.items():
            pair = self._current(module).lora[name]
            m.A, m.B = pair.A.data, pair.B.data
        self._adapters[name] = _Loaded(adapter, scale)
        self._place(done)

    def unload(self, name: str) -> None:
        """Remove adapter ``name``; an unmerged one leaves the base weights bit-exact."""
        st = self._get(name)
        with self.guard():
            for module in [*st.adapter.modules, *st.adapter.saved]:
                self._detach(module, name)
            del self._adapters[name]
        self._changed()

    def unload_all(self) -> None:
        for name in list(self._adapters):
            self.unload(name)

    # --- saving and export ---------------------------------------------------------------------

    def save(self, name: str, out_dir: str | Path) -> Path:
        """Write adapter ``name`` in PEFT's format, naming this manager's base when it is known
        (its Hugging Face id for PEFT, chatcli's name and the weights' sha256 beside it)."""
        from chatcli.lora.peft_io import write_adapter

        return write_adapter(self._get(name).adapter, out_dir, base=self.base)

    def base_parameters(self) -> dict[str, torch.Tensor]:
        """Every base-model parameter by checkpoint key (merged adapters included), wrappers or not."""
        return {key: getattr(owner, attr).detach() for key, (owner, attr) in self._params.items()}

    def merged_state_dict(self) -> tuple[dict[str, torch.Tensor], bool]:
        """See :func:`chatcli.lora.merge.merged_state_dict`."""
        from chatcli.lora.merge import merged_state_dict

        return merged_state_dict(self)

    # --- internals (the layers' own: layer_slots.py) --------------------------------------------

    def _get(self, name: str) -> _Loaded:
        st = self._adapters.get(name)
        if st is None:
            loaded = ", ".join(self._adapters) or "none"
            raise UsageError(f"no adapter named {name!r} is loaded (loaded: {loaded})")
        return st

    def _bump(self) -> None:
        """The effective weights changed: KV caches made before are stale (see Generator)."""
        self._version += 1

    def _changed(self) -> None:
        self._bump()
        for callback in self.on_change:
            callback()

