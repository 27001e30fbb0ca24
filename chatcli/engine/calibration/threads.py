"""torch's thread count per generation phase, from a model's :class:`~chatcli.model.kernel_choice.KernelChoices`.

A prefill multiplies many rows at once and wants every core; a decode step reads each weight
once for one row, and on some CPUs runs as fast or faster on fewer threads (less time spent
waking and joining them). The generator calls :func:`phase_threads` when a phase starts
(``"prefill"``, ``"decode"``) and when its answer ends (``"idle"``: back to the count in effect
when the choices were measured, so scoring and probes that follow, and a model loaded later in
the process, see the count the user set). A choice of None leaves torch's count as it is: the
defaults and a model without a calibration change nothing.

torch's count is per process: two models answering at once on two threads would switch it
for each other (chatcli answers one at a time per model; the calibration never picks a count
above the one in effect when the model was loaded).
"""

from __future__ import annotations

import torch

PHASES = ("prefill", "decode", "idle")


def phase_threads(model: torch.nn.Module, phase: str) -> None:
    """Set torch's thread count for ``phase`` from ``model.kernel_choices`` (no change when None or equal)."""
    choices = model.kernel_choices
    n = {"prefill": choices.prefill_threads, "decode": choices.decode_threads}.get(phase, choices.idle_threads)
    if n is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def thread_candidates(budget: int) -> tuple[int, ...]:
    """The counts worth measuring under a budget of ``budget`` threads: it, its half, its quarter."""
    return tuple(sorted({budget, max(1, budget // 2), max(1, budget // 4)}, reverse=True))
