"""What a person is told about an adapter, and the small rules for names and scales.

:class:`AdapterInfo` is one row of ``/lora`` (and ``lora diff``'s meta);
:func:`adapter_name` turns a folder or file stem into a valid adapter name;
:func:`check_scale` accepts any finite number; :func:`sort_targets` orders module
short names as they appear in a transformer block.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chatcli.errors import UsageError
from chatcli.model.lora_linear import lora_scaling

if TYPE_CHECKING:
    from chatcli.lora.peft_io import LoRAAdapter

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
# Display order of target short names (the order of a transformer block).
_TARGET_ORDER = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head", "embed_tokens")


@dataclass(frozen=True)
class AdapterInfo:
    """One row of ``/lora``."""

    name: str
    source: str | None
    rank: int  # the largest rank (ranks lists all when they differ)
    ranks: tuple[int, ...]
    alpha: float
    rslora: bool
    scaling: float  # c = alpha / r (rsLoRA: alpha / sqrt(r)), of most of its modules
    targets: tuple[str, ...]  # short module names: q_proj, v_proj, ...
    layers: int  # how many transformer layers it touches
    modules: int  # how many linear layers it wraps
    replaces: tuple[str, ...]  # modules_to_save
    params: int
    percent: float  # of the base model's parameters
    scale: float
    enabled: bool
    merged: bool
    base_model: str | None

    def to_json(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def scaling_rule(rslora: bool) -> str:
    """How an adapter's B·A is scaled, as a person reads it: "α/r", or "α/√r" for rsLoRA."""
    return "α/√r" if rslora else "α/r"


def sort_targets(names: Iterable[str]) -> tuple[str, ...]:
    """Short module names in a transformer block's order (q, k, v, o, gate, up, down, ...)."""
    return tuple(sorted(set(names), key=lambda s: (_TARGET_ORDER.index(s) if s in _TARGET_ORDER else 99, s)))


def adapter_name(text: str) -> str:
    """A valid adapter name from a folder or file stem (other characters become '_')."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", text.strip())[:64].strip("_")
    return name or "adapter"


def check_scale(scale: float) -> float:
    try:
        s = float(scale)
    except (TypeError, ValueError):
        raise UsageError(f"adapter scale must be a number, not {scale!r}") from None
    if not math.isfinite(s):
        raise UsageError(f"adapter scale must be finite, not {scale!r}")
    return s


def describe(name: str, a: "LoRAAdapter", scale: float, enabled: bool, merged: bool, base_params: int) -> AdapterInfo:
    """The :class:`AdapterInfo` of adapter ``a`` loaded as ``name``."""
    ranks = sorted({m.r for m in a.modules.values()})
    alphas = [m.alpha for m in a.modules.values()]
    scalings = [lora_scaling(m.r, m.alpha, a.use_rslora) for m in a.modules.values()]
    layers = {int(x.group(1)) for m in a.modules if (x := _LAYER.search(m))}
    params = a.num_params()
    return AdapterInfo(
        name=name,
        source=a.source,
        rank=max(ranks) if ranks else 0,
        ranks=tuple(ranks),
        alpha=max(set(alphas), key=alphas.count) if alphas else 0.0,
        rslora=a.use_rslora,
        scaling=max(set(scalings), key=scalings.count) if scalings else 0.0,
        targets=sort_targets(m.rsplit(".", 1)[-1] for m in a.modules),
        layers=len(layers),
        modules=len(a.modules),
        replaces=tuple(sorted(a.saved)),
        params=params,
        percent=100.0 * params / max(base_params, 1),
        scale=scale,
        enabled=enabled,
        merged=merged,
        base_model=a.base_model,
    )
