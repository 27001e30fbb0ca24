"""How big an adapter's change is, layer by layer: ‖ΔW‖_F / ‖W0‖_F for every module it wraps.

A LoRA adapter adds ``ΔW = s·c·B·A`` to a frozen weight ``W0`` (``c`` = α/r, or α/√r for
rsLoRA; ``s`` the adapter's live scale; :mod:`chatcli.model.lora_linear`). For each
wrapped module this measures the relative size of that change::

    ratio = ‖s·c·B·A‖_F / ‖W0‖_F

``‖B·A‖_F`` comes from the two r×r Gram matrices, ``‖B·A‖_F² = Σ (BᵀB) ∘ (AAᵀ)``
(float64), so no ΔW is ever built for it. ``‖W0‖_F`` is the manager's
:meth:`~chatcli.lora.manager.AdapterManager.base_norm` (computed once per module) of
:meth:`~chatcli.lora.manager.AdapterManager.base_weight`: the plain weight (a view into
the packed q/k/v or gate/up storage where the model is packed), the dequantised weight of
an int8 or int4 layer, or, where adapters are merged, the merged weight minus their ΔW (built for
that one module, then dropped). A layer's and a module kind's figures combine their
modules' squares: ``sqrt(Σ‖ΔW‖²) / sqrt(Σ‖W0‖²)``.

The ratio uses the adapter's current scale whether it is switched on or not (what it adds
when on); :class:`LayerNorms` records whether it is on and merged.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch

from chatcli.lora.info import sort_targets
from chatcli.lora.manager import AdapterManager
from chatcli.model.lora_linear import lora_scaling

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


@dataclass(frozen=True)
class ModuleNorm:
    """One wrapped linear layer: the size of its ΔW against W0."""

    module: str  # full name: model.layers.3.self_attn.q_proj
    layer: int | None  # transformer layer index; None for a module outside the blocks (lm_head)
    target: str  # short name: q_proj
    delta_norm: float  # ‖s·c·B·A‖_F
    base_norm: float  # ‖W0‖_F

    @property
    def ratio(self) -> float:
        return self.delta_norm / self.base_norm if self.base_norm > 0 else math.inf if self.delta_norm > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"module": self.module, "layer": self.layer, "target": self.target,
                "delta_norm": self.delta_norm, "base_norm": self.base_norm, "ratio": self.ratio}  # fmt: skip


@dataclass(frozen=True)
class LayerNorms:
    """Every module of one adapter, in model order (layer, then q k v o gate up down)."""

    adapter: str
    scale: float
    scaling: float  # c of most modules (AdapterInfo.scaling)
    rslora: bool
    enabled: bool
    merged: bool
    cells: tuple[ModuleNorm, ...]

    @property
    def targets(self) -> tuple[str, ...]:
        return sort_targets(c.target for c in self.cells)

    @property
    def layers(self) -> list[int | None]:
        """The rows: layer indices in order, then None when modules outside the blocks are wrapped."""
        found = {c.layer for c in self.cells}
        return sorted(x for x in found if x is not None) + ([None] if None in found else [])

    def cell(self, layer: int | None, target: str) -> ModuleNorm | None:
        return next((c for c in self.cells if c.layer == layer and c.target == target), None)

    def largest(self) -> ModuleNorm | None:
        return max(self.cells, key=lambda c: c.ratio) if self.cells else None

    def layer_ratio(self, layer: int | None) -> float:
        """The whole layer's relative change: sqrt(Σ‖ΔW‖²) / sqrt(Σ‖W0‖²) over its wrapped modules."""
        return combined([c for c in self.cells if c.layer == layer])

    def target_ratio(self, target: str) -> float:
        """One module kind (e.g. every q_proj) across the layers, combined the same way."""
        return combined([c for c in self.cells if c.target == target])

    def total_ratio(self) -> float:
        return combined(self.cells)

    def to_json(self) -> dict[str, Any]:
        top = self.largest()
        return {
            "type": "layer_norms", "adapter": self.adapter, "scale": self.scale, "scaling": self.scaling,
            "scaling_rule": "alpha/sqrt(r)" if self.rslora else "alpha/r", "enabled": self.enabled, "merged": self.merged,
            "ratio": "||scale * scaling * B A||_F / ||W0||_F", "targets": list(self.targets),
            "cells": [c.to_json() for c in self.cells],
            "layers": [{"layer": x, "ratio": self.layer_ratio(x)} for x in self.layers],
            "total_ratio": self.total_ratio(),
            "largest": top.to_json() if top else None,
        }  # fmt: skip


def combined(cells) -> float:
    delta = math.sqrt(sum(c.delta_norm**2 for c in cells))
    base = math.sqrt(sum(c.base_norm**2 for c in cells))
    return delta / base if base > 0 else 0.0


def product_norm(A: torch.Tensor, B: torch.Tensor) -> float:
    """‖B·A‖_F for A [r, in], B [out, r], without forming B·A: sqrt(Σ (BᵀB) ∘ (AAᵀ)), in float64."""
    a, b = A.detach().double(), B.detach().double()
    sq = float(((b.T @ b) * (a @ a.T)).sum())
    return math.sqrt(max(sq, 0.0))  # rounding can leave a tiny negative for a zero product


@torch.no_grad()
def layer_norms(manager: AdapterManager, name: str) -> LayerNorms:
    """‖ΔW‖_F / ‖W0‖_F of every module adapter ``name`` wraps (see the module docstring)."""
    info = manager.info(name)
    adapter = manager.adapter(name)
    cells = []
    for module, m in adapter.modules.items():
        c = lora_scaling(m.r, m.alpha, adapter.use_rslora)
        delta = abs(info.scale * c) * product_norm(m.A, m.B)
        base = manager.base_norm(module)
        found = _LAYER.search(module)
        cells.append(ModuleNorm(module, int(found.group(1)) if found else None, module.rsplit(".", 1)[-1], delta, base))
    order = {t: i for i, t in enumerate(sort_targets(c.target for c in cells))}
    cells.sort(key=lambda c: (c.layer is None, c.layer or 0, order[c.target], c.module))
    return LayerNorms(name, info.scale, info.scaling, info.rslora, info.enabled, info.merged, tuple(cells))
