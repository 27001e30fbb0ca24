"""Which layers of an adapter move the answer: per-layer ablation, teacher-forced.

``layer_ablation(model, manager, prompt_ids, answer_ids)`` scores the answer's tokens
once with the adapters on (as :mod:`chatcli.lora.compare` does: one forward, no
cache, no sampling), then once per transformer layer with the adapters switched off
in that layer only (every module they wrap there; :meth:`AdapterManager.modules_off`),
and once with them off everywhere. For layer ℓ and every answer step t with prefix x::

    KL_ℓ(t) = Σ_v p_on(v|x) · (log p_on(v|x) − log p_off-ℓ(v|x))     [bits]

and the layer's figure is the mean over the answer's steps (also its largest step,
and at how many steps the most probable token changes). The total (every layer off,
i.e. the model without those adapters) is the reference: layers do not add up to it,
they interact. ``names``/``scales``/``off`` choose the adapters exactly as for
``compare_answer``: ``/lora-layers`` uses those that made the answer, at their scales.
Modules outside the transformer blocks that an adapter wraps (an ``lm_head`` target)
are one more row; full replacements (``modules_to_save``) stay on except in the total.
Every switch, scale and merged weight is restored afterwards, even on an error
(the manager's ``override`` and ``modules_off``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from chatcli.errors import GenerationError, UsageError
from chatcli.lora.compare import LN2, answer_log_probs, label, prepare
from chatcli.lora.manager import AdapterManager

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


@dataclass(frozen=True)
class LayerEffect:
    """What switching the adapters off in one layer does to the answer's distributions."""

    layer: int | None  # None: a module outside the transformer blocks (its name is in ``modules``)
    modules: tuple[str, ...]  # the wrapped modules switched off
    kl_bits: float  # mean over the answer of KL(all on || this layer off)
    max_kl_bits: float
    changed: int  # steps whose most probable token differs

    @property
    def label(self) -> str:
        return str(self.layer) if self.layer is not None else self.modules[0].rsplit(".", 1)[-1]

    def to_json(self) -> dict[str, Any]:
        return {"layer": self.layer, "label": self.label, "modules": len(self.modules), "mean_kl_bits": self.kl_bits,
                "max_kl_bits": self.max_kl_bits, "changed": self.changed}  # fmt: skip


@dataclass(frozen=True)
class Ablation:
    adapters: tuple[str, ...]  # with the scale they ran at when it is not 1 ("sft", "sft×0.5")
    tokens: int
    layers: tuple[LayerEffect, ...]  # in model order
    total_kl_bits: float  # every layer off: KL(all on || without the adapters), mean over the answer
    total_changed: int

    def ranked(self) -> list[LayerEffect]:
        """Layers by mean KL, largest first (model order among equals)."""
        return sorted(self.layers, key=lambda e: -e.kl_bits)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "layer_ablation", "adapters": list(self.adapters), "tokens": self.tokens,
            "kl": "KL(all on || layer off), bits, mean over the answer",
            "layers": [e.to_json() for e in self.ranked()],
            "total_kl_bits": self.total_kl_bits, "total_changed": self.total_changed,
        }  # fmt: skip


def layer_groups(manager: AdapterManager, names: Iterable[str]) -> list[tuple[int | None, tuple[str, ...]]]:
    """(layer, the modules adapters ``names`` wrap in it), layers in order, then the modules outside the blocks."""
    by_layer: dict[int, list[str]] = {}
    outside: list[str] = []
    for n in names:
        for module in manager.adapter(n).modules:
            found = _LAYER.search(module)
            if found:
                by_layer.setdefault(int(found.group(1)), []).append(module)
            else:
                outside.append(module)
    groups: list[tuple[int | None, tuple[str, ...]]] = [(k, tuple(dict.fromkeys(by_layer[k]))) for k in sorted(by_layer)]
    return groups + [(None, (m,)) for m in dict.fromkeys(outside)]


def _kl(lp_on: torch.Tensor, lp_off: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Per-step KL(on || off) in bits [n], and the steps whose top token differs."""
    if not torch.isfinite(lp_off).all():
        raise GenerationError("the model produced NaN/Inf logits; the ablation is meaningless")
    kl = (lp_on.exp() * (lp_on - lp_off)).sum(-1).clamp(min=0.0) / LN2  # clamp float noise below 0
    return kl, int((lp_on.argmax(-1) != lp_off.argmax(-1)).sum())


def layer_ablation(
    model,
    manager: AdapterManager,
    prompt_ids: Sequence[int],
    answer_ids: Sequence[int],
    *,
    names: Iterable[str] | None = None,
    scales: Mapping[str, float] | None = None,
    off: Iterable[str] = (),
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> Ablation:
    """Per-layer ablation KL of ``answer_ids`` after ``prompt_ids`` (see the module docstring).

    ``progress(done, total)`` is called after each forward; ``cancel`` set stops between
    forwards with a UsageError (everything restored)."""
    names, off, ids, start = prepare(model, manager, prompt_ids, answer_ids, names, off, command="/lora-layers")
    scales = dict(scales or {})
    groups = layer_groups(manager, names)
    if not groups:
        raise UsageError(f"{', '.join(names)} wraps no linear layer (only full replacements): no layer to switch off")
    total_passes = len(groups) + 2
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total_passes)
        if cancel is not None and cancel.is_set():
            raise UsageError("the per-layer ablation was stopped")

    effects = []
    with manager.guarded():
        with manager.override(on=names, off=off, scales=scales):
            lp_on = answer_log_probs(model, ids, start)  # [n, V]
            if not torch.isfinite(lp_on).all():
                raise GenerationError("the model produced NaN/Inf logits; the ablation is meaningless")
            step()
            for layer, modules in groups:
                with manager.modules_off(names, modules):
                    kl, changed = _kl(lp_on, answer_log_probs(model, ids, start))
                effects.append(LayerEffect(layer, modules, float(kl.mean()), float(kl.max()), changed))
                step()
        with manager.override(off=[*names, *off]):
            total, total_changed = _kl(lp_on, answer_log_probs(model, ids, start))
        step()
    return Ablation(
        adapters=tuple(label(n, scales.get(n, manager.info(n).scale)) for n in names),
        tokens=len(answer_ids),
        layers=tuple(effects),
        total_kl_bits=float(total.mean()),
        total_changed=total_changed,
    )
