"""What a run tells the person: the plan (parameters, predicted memory), progress, the summary.

Memory prediction is the rule of thumb from the LoRA article: the frozen model once,
plus about ten times the trainable parameters (their gradients, AdamW's two moments
and working copies), in bytes of their dtypes. Activations are not in it, so the
measured peak (process max RSS on CPU, ``torch.cuda.max_memory_allocated`` on a
GPU) sits above it by roughly batch × length × layers × hidden.

Reporters: :class:`RichReporter` (a progress bar on stderr with loss, learning rate,
tokens/s and ETA), :class:`JsonReporter` (one metrics object per line on stdout, for
``--json`` and for the chat's background runs) and :class:`QuietReporter` (tests).
"""

from __future__ import annotations

import json
import resource
import sys
from dataclasses import dataclass

import torch

MB = 1024 * 1024


@dataclass(frozen=True)
class Plan:
    kind: str
    model: str
    train_examples: int
    val_examples: int
    total_steps: int
    trainable: int
    total_params: int
    predicted_bytes: int
    world_size: int = 1

    @property
    def share(self) -> float:
        return 100.0 * self.trainable / max(1, self.total_params)

    def to_json(self) -> dict:
        return {"event": "plan", **self.__dict__, "trainable_percent": round(self.share, 4)}


def predicted_memory(frozen_params: int, frozen_bytes_per: int, trainable: int, trainable_bytes_per: int = 4) -> int:
    """The article's rule of thumb: frozen model once + ~10x the trainable parameters."""
    return frozen_params * frozen_bytes_per + 10 * trainable * trainable_bytes_per


def peak_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what was measured)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "torch.cuda.max_memory_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss * (1 if sys.platform == "darwin" else 1024)), "process peak RSS"


def _fmt_metrics(m: dict) -> str:
    parts = [f"loss {m['loss']:.4f}"]
    if "val_loss" in m:
        parts.append(f"val {m['val_loss']:.4f}")
    if "accuracy" in m:
        parts.append(f"acc {m['accuracy']:.2f}")
    parts += [f"lr {m['lr']:.2e}", f"{m['tokens_per_s']:.0f} tok/s"]
    return "  ".join(parts)


class QuietReporter:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.steps: list[dict] = []

    def message(self, text: str) -> None:
        self.lines.append(text)

    def plan(self, plan: Plan) -> None:
        self.lines.append(json.dumps(plan.to_json()))

    def start(self, total: int, done: int) -> None:
        pass

    def step(self, m: dict) -> None:
        self.steps.append(m)

    def end(self, summary: dict, plot: str) -> None:
        self.lines.append(json.dumps(summary))

    def close(self) -> None:
        pass


class JsonReporter(QuietReporter):
    """Metrics as JSON lines on stdout; human messages on stderr."""

    def _emit(self, obj: dict) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def message(self, text: str) -> None:
        sys.stderr.write(f"chatcli: {text}\n")

    def plan(self, plan: Plan) -> None:
        self._emit(plan.to_json())

    def step(self, m: dict) -> None:
        self._emit({"event": "step", **m})

    def end(self, summary: dict, plot: str) -> None:
        self._emit({"event": "summary", **summary})


class RichReporter(QuietReporter):
    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console

        self.console = Console(stderr=True)
        self.progress = None
        self.task = None

    def message(self, text: str) -> None:
        self.console.print(f"chatcli: {text}", highlight=False, markup=False)

    def plan(self, p: Plan) -> None:
        c = self.console
        c.print(f"[bold]{p.kind}[/] on {p.model}: {p.train_examples} training / {p.val_examples} validation examples, "
                f"{p.total_steps} steps" + (f", {p.world_size} processes" if p.world_size > 1 else ""))  # fmt: skip
        c.print(f"trainable parameters: {p.trainable:,} of {p.total_params:,} ({p.share:.3f}%)")
        c.print(f"predicted memory: {p.predicted_bytes / MB:,.0f} MB (frozen model + ~10x trainable; activations extra)")

    def start(self, total: int, done: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(), console=self.console, transient=False,
        )  # fmt: skip
        self.progress.start()
        self.task = self.progress.add_task("train", total=total, completed=done, info="")

    def step(self, m: dict) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=m["step"], info=_fmt_metrics(m))

    def end(self, summary: dict, plot: str) -> None:
        self.close()
        c = self.console
        if plot:
            c.print(plot, highlight=False, markup=False)
        for k, v in summary.items():
            if k != "event":
                c.print(f"  {k}: {v}", highlight=False, markup=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
