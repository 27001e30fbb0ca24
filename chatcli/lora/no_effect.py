"""When an adapter changes nothing measurable: the threshold, the likely reason, one line.

An answer's mean KL(adapter‖base) below :data:`NO_EFFECT_BITS` (0.001 bits per token)
means the adapter does not move the model's distributions in any way a person could
see. :func:`no_effect_line` says so and why, checking the likely causes in this order:

* its scale is 0 (``/lora-scale NAME 0``, or the answer was made at scale 0);
* it is switched off (only where asked: ``/compare`` switches adapters on itself);
* it wraps no layer of this model (none of its target modules is here);
* its B matrices (or its A matrices) are all zeros: ``B·A = 0`` (PEFT starts B at zero,
  so an adapter saved before any training step is exactly this);
* otherwise its change is too small: the largest ‖ΔW‖_F / ‖W0‖_F of its modules
  (:mod:`chatcli.lora.layer_norms`) is given.

:func:`chatcli.lora.compare.compare_answer` puts the line in ``Comparison.no_effect``;
:func:`chatcli.lora.compare.answer_effect` is the check run after ``/load-lora`` and
``/lora-scale`` on the last answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from chatcli.lora.manager import AdapterManager

NO_EFFECT_BITS = 0.001


def no_effect_reason(manager: AdapterManager, name: str, scale: float | None = None, *, check_enabled: bool = False) -> str:
    """Why adapter ``name`` (at ``scale``, default its current one) changes nothing: the first likely cause."""
    info = manager.info(name)
    scale = info.scale if scale is None else scale
    if scale == 0:
        return f"its scale is 0 (/lora-scale {name} 1 gives it its full effect)"
    if check_enabled and not info.enabled:
        return f"it is switched off (/lora-on {name})"
    adapter = manager.adapter(name)
    if not adapter.modules and not adapter.saved:
        return "it wraps no layer of this model (none of its target modules is in it)"
    if not adapter.saved:
        if all(not bool(m.B.any()) for m in adapter.modules.values()):
            return "its B matrices are all zeros, so B·A = 0 (PEFT starts B at zero: an adapter saved before training)"
        if all(not bool(m.A.any()) for m in adapter.modules.values()):
            return "its A matrices are all zeros, so B·A = 0"
    from chatcli.lora.layer_norms import layer_norms

    top = layer_norms(manager, name).largest()
    if top is None:
        return "its change is too small to move the model's distributions"
    return f"its change is too small: the largest ‖ΔW‖/‖W0‖ is {top.ratio:.1e} ({top.module})"


def no_effect_line(manager: AdapterManager, names: Iterable[str], mean_kl_bits: float,
                   scales: Mapping[str, float] | None = None, *, check_enabled: bool = False) -> str:
    """'sft changes nothing measurable on this answer (mean KL 0.0000 bits < 0.001): its B matrices ...'."""
    names = list(names)
    scales = dict(scales or {})
    reasons = [no_effect_reason(manager, n, scales.get(n), check_enabled=check_enabled) for n in names]
    why = reasons[0] if len(names) == 1 else "; ".join(f"{n}: {r}" for n, r in zip(names, reasons))
    verb = "changes" if len(names) == 1 else "change"
    return (f"{', '.join(names)} {verb} nothing measurable on this answer "
            f"(mean KL {_bits(mean_kl_bits)} bits < {NO_EFFECT_BITS:g}): {why}")  # fmt: skip


def _bits(x: float) -> str:
    return f"{x:.1e}" if 0 < x < 1e-4 else f"{x:.4f}"
