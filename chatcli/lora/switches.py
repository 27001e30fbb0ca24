"""Switching loaded adapters: scale, on, off, merge, unmerge (:class:`AdapterSwitches`).

A mixin of :class:`~chatcli.lora.manager.AdapterManager`: it works on the manager's state
(``_adapters``, ``_get``, ``guard``, ``_changed``) and its layers (``_slots``, ``_current``,
``_place``, ``_shared_weight``: :mod:`chatcli.lora.layer_slots`), which stay defined there.
Every change runs under the manager's guard (no answer is streaming), brings the adapter to
its new state in every layer it touches (:meth:`AdapterSwitches._apply`: a merged adapter is
unmerged before its scale changes or it goes off), puts each layer's wrapper in or out of
the model, and tells the listeners. A merge is refused, changing nothing, for a quantised
layer (its weights cannot take the delta) and for a weight shared with another module (tied
embeddings).
"""

from __future__ import annotations

from chatcli.lora.info import check_scale
from chatcli.lora.validate import AdapterError
from chatcli.model.qlinear import QuantizedLinear


class AdapterSwitches:
    def set_scale(self, name: str, scale: float) -> None:
        self._get(name)
        self._switch(name, scale=check_scale(scale))

    def enable(self, name: str) -> None:
        self._get(name)
        self._switch(name, enabled=True)

    def disable(self, name: str) -> None:
        """Switch ``name`` off (a merged adapter is unmerged first)."""
        self._get(name)
        self._switch(name, enabled=False)

    def merge(self, name: str) -> None:
        """Fold ``name`` into the base weights (it stays listed; unmerge to separate it again)."""
        st = self._get(name)
        quantized = [m for m in st.adapter.modules if isinstance(self._slots[m][2], QuantizedLinear)]
        if quantized:
            method = self._slots[quantized[0]][2].method
            raise AdapterError(
                f"cannot merge {name}: {quantized[0]} has {method} weights (--quantize {method}); it stays unmerged "
                "(load the model without --quantize to merge)"
            )
        tied = [m for m in st.adapter.modules if self._shared_weight(m)]
        if tied:
            raise AdapterError(
                f"cannot merge {name}: {tied[0]} shares its weight with another module (tied embeddings); "
                "it stays unmerged (or export a merged copy with 'chatcli lora merge')"
            )
        self._switch(name, enabled=True, merged=True)

    def unmerge(self, name: str) -> None:
        self._get(name)
        self._switch(name, merged=False)

    def _switch(self, name: str, **state) -> None:
        """:meth:`_apply` while no answer runs (the guard), then tell the listeners."""
        with self.guard():
            self._apply(name, **state)
        self._changed()

    def _apply(self, name: str, *, scale: float | None = None, enabled: bool | None = None, merged: bool | None = None) -> None:
        """Bring adapter ``name`` to the requested state in every layer it touches."""
        st = self._adapters[name]
        new_scale = st.scale if scale is None else scale
        new_enabled = st.enabled if enabled is None else enabled
        new_merged = (st.merged if merged is None else merged) and new_enabled
        for module in st.adapter.modules:
            wrapper = self._current(module)
            pair = wrapper.lora[name]
            if pair.merged and (not new_merged or new_scale != pair.merged_scale):
                wrapper.unmerge(name)
            pair.scale, pair.enabled = new_scale, new_enabled
            if new_merged and not pair.merged:
                wrapper.merge(name)
            wrapper.invalidate()
        for module in st.adapter.saved:
            rep = self._current(module).replacements[name]
            rep.scale, rep.enabled = new_scale, new_enabled
        st.scale, st.enabled, st.merged = new_scale, new_enabled, new_merged
        self._place([*st.adapter.modules, *st.adapter.saved])
