"""A calibration for people: the table ``chatcli bench --calibrate`` prints, and the bench's one-line note."""

from __future__ import annotations

from chatcli.engine.calibration.record import Calibration
from chatcli.model.kernel_choice import KernelChoices

_UNITS = {"decode": "ms/token", "prefill": "ms/prompt"}


def render(cal: Calibration, where: str) -> str:
    """Every measurement (``*`` chosen, ``=`` the baseline it had to beat), then the choices and ``where``."""
    k = cal.key
    shape = k["shape"]
    head = [
        f"chatcli calibration: {k['cpu']} (flags {k['cpu_flags'] or 'unknown'}), torch {k['torch']}, "
        f"{k['threads']} threads",
        f"model: {shape['model_type']} {shape['layers']} layers x {shape['hidden']} (vocab {shape['vocab']}), "
        f"{k['dtype']}, quantize {k['quantize']}; measured in {cal.seconds:.1f} s",
    ]
    if cal.busy:
        head.append(f"the machine was busy (load {cal.load_per_core:.1f} per CPU): thread counts measured now favour "
                    "fewer threads; measure again on a quiet moment")
    head.append("")
    if not cal.measurements:
        head.append("nothing to choose for this model here: one path and one thread count")
    table = [(m.what, m.candidate, f"{m.ms:.3f} {_UNITS.get(m.what, 'ms/layer')}",
              ("*" if m.chosen else " ") + ("=" if m.baseline else " ")) for m in cal.measurements]  # fmt: skip
    if table:
        widths = [max(len(r[i]) for r in table + [("what", "candidate", "time", "")]) for i in range(3)]
        head.append(f"{'what'.ljust(widths[0])}  {'candidate'.ljust(widths[1])}  {'time'.rjust(widths[2])}")
        head += [f"{a.ljust(widths[0])}  {b.ljust(widths[1])}  {c.rjust(widths[2])}  {d}".rstrip()
                 for a, b, c, d in table]  # fmt: skip
        head.append("* chosen, = the baseline (kept unless another is more than 5 % faster)")
    return "\n".join(head + ["", f"chosen: {cal.choices.describe()}", where])


def kernel_note(choices: KernelChoices, cal: Calibration | None, auto: bool) -> str:
    """One line saying which paths a loaded model uses and where they came from (the bench's notes)."""
    if cal is not None:
        origin = f"calibrated on this CPU {cal.created} in {cal.seconds:.1f} s"
    else:
        origin = "defaults: automatic calibration off (CHATCLI_CALIBRATE)" if not auto else "defaults: not calibrated"
    return f"chatcli kernels: {choices.describe()} ({origin})"
