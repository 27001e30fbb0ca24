"""Temporary adapter switches for :class:`~chatcli.lora.manager.AdapterManager`.

``override(on, off, scales)`` runs a block with some adapters switched on or off
(the base model for ``/compare``, DPO's reference, reward scoring, ``/rank --lora-mix``),
optionally at other scales (``/compare`` of an answer made at the scales of its time),
and restores every switch, scale and merged weight in ``finally``. Merged weights come
back from a copy taken before, not by re-adding deltas, so they are bit-exact.
``modules_off(names, modules)`` does the same for some modules only (the per-layer
ablation of :mod:`chatcli.lora.ablation`).
Entering and leaving bump the manager's weights version, so no KV cache filled under
the other weights is reused.

A mixin: it works on the manager's state (``_adapters``, ``_current``, ``_apply``,
``_place``, ``_get``, ``_bump``, ``guard``), which stays defined in ``manager.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import ContextManager

import torch

from chatcli.lora.info import check_scale


class TemporarySwitches:
    @contextmanager
    def override(self, on: Iterable[str] = (), off: Iterable[str] = (),
                 scales: Mapping[str, float] | None = None) -> Iterator[None]:
        """Temporarily switch adapters on/off (``scales``: those of ``on`` at these scales);
        every switch, scale and weight is restored after."""
        on, off, scales = list(on), list(off), dict(scales or {})
        for n in [*on, *off, *scales]:
            self._get(n)
        for n in scales:
            scales[n] = check_scale(scales[n])
        saved_states = {n: (a.scale, a.enabled, a.merged) for n, a in self._adapters.items()}
        # Merged weights come back from a copy, not by re-adding deltas (no rounding drift):
        # an adapter switched off, or re-merged at another scale, changes them.
        weights: dict[str, torch.Tensor] = {}
        rescaled = [n for n in on if n in scales and n not in off and scales[n] != self._adapters[n].scale]
        for n in [*off, *rescaled]:
            if self._adapters[n].merged:
                for module in self._adapters[n].adapter.modules:
                    if module not in weights:
                        weights[module] = self._current(module).base.weight.detach().clone()
        try:
            for n in off:
                self._apply(n, enabled=False)
            for n in on:
                if n not in off:
                    self._apply(n, enabled=True, scale=scales.get(n))
            self._bump()  # caches filled before the switch hold other weights' keys/values
            yield
        finally:
            with torch.no_grad():
                for module, w in weights.items():
                    self._current(module).base.weight.copy_(w)
            for n, (scale, enabled, merged) in saved_states.items():
                st = self._adapters[n]
                for module in st.adapter.modules:
                    wrapper = self._current(module)
                    pair = wrapper.lora[n]
                    pair.scale, pair.enabled = scale, enabled
                    if module in weights:  # the weight copy already holds this merge
                        pair.merged_scale = scale if merged else None
                    elif merged and not pair.merged:
                        wrapper.merge(n)
                    elif not merged and pair.merged:
                        wrapper.unmerge(n)
                    wrapper.invalidate()
                for module in st.adapter.saved:
                    rep = self._current(module).replacements[n]
                    rep.scale, rep.enabled = scale, enabled
                st.scale, st.enabled, st.merged = scale, enabled, merged
                self._place([*st.adapter.modules, *st.adapter.saved])
            self._bump()

    @contextmanager
    def modules_off(self, names: Iterable[str], modules: Iterable[str]) -> Iterator[None]:
        """Run a block with adapters ``names`` switched off in ``modules`` only (per-layer ablation):
        their other modules, and every other adapter, stay as they are. A merged adapter is
        subtracted from those modules' weights; the weights come back from a copy, and every
        switch as it was, in ``finally``."""
        names, wanted = list(names), set(modules)
        for n in names:
            self._get(n)
        touched: list[tuple[str, str, bool, float | None]] = []  # (adapter, module, enabled, merged_scale)
        weights: dict[str, torch.Tensor] = {}
        try:
            for n in names:
                for module in self._adapters[n].adapter.modules:
                    if module not in wanted:
                        continue
                    wrapper = self._current(module)
                    pair = wrapper.lora[n]
                    touched.append((n, module, pair.enabled, pair.merged_scale))
                    if pair.merged:
                        if module not in weights:
                            weights[module] = wrapper.base.weight.detach().clone()
                        wrapper.unmerge(n)
                    pair.enabled = False
                    wrapper.invalidate()
            self._place({m for _, m, _, _ in touched})
            self._bump()  # caches filled before hold other weights' keys/values
            yield
        finally:
            with torch.no_grad():
                for module, w in weights.items():
                    self._current(module).base.weight.copy_(w)
            for n, module, enabled, merged_scale in touched:
                wrapper = self._current(module)
                wrapper.lora[n].enabled, wrapper.lora[n].merged_scale = enabled, merged_scale
                wrapper.invalidate()
            self._place({m for _, m, _, _ in touched})
            self._bump()

    def disabled(self, names: Iterable[str] | None = None) -> ContextManager[None]:
        """Run the base model (or the model without ``names``) inside the block."""
        return self.override(off=list(self._adapters) if names is None else list(names))

    @contextmanager
    def guarded(self) -> Iterator[None]:
        """Hold the guard (no answer streams meanwhile) for work that reads the model."""
        with self.guard():
            yield
