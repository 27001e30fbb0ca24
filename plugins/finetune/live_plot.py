"""The live training curves in the chat: a screen that redraws DIR/metrics.jsonl every second.

``/finetune plot [DIR]`` (or F8 while a run is going, or the command palette's
"Fine-tuning curves") pushes :class:`LivePlotScreen` for the session's run or
for any run folder. Each second it reads only the lines appended to
``metrics.jsonl`` since the last look (:class:`MetricsTail`: a file offset; a
file that shrank, as ``--resume`` truncates it, is read again from the start),
and redraws the loss as a text chart (:func:`chatcli_finetune.plot.terminal_plot`:
'•' train, 'o' validation) and the run's other metrics as one-line unicode
sparklines (:func:`sparkline`). Nothing here imports torch or matplotlib.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, Static

from chatcli_finetune.plot import series, terminal_plot

BLOCKS = "▁▂▃▄▅▆▇█"
# (metric, its validation twin, the row's label): the sparklines under the loss chart, where the run has them.
SPARKS = [("accuracy", "val_accuracy", "accuracy"), ("margin", "val_margin", "margin"), ("reward", "val_reward", "reward"),
          ("kl", "val_kl", "KL"), ("lr", None, "lr"), ("grad_norm", None, "grad norm")]  # fmt: skip


class MetricsTail:
    """The lines of a growing ``metrics.jsonl``, read incrementally (a partial last line waits)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0
        self.rows: list[dict] = []

    def read(self) -> list[dict]:
        """Every metrics object so far (what is new is read; nothing when the file is not there yet)."""
        try:
            size = self.path.stat().st_size
            if size < self.offset:  # truncated (a resumed run drops the steps after its checkpoint)
                self.offset, self.rows = 0, []
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read(size - self.offset)
        except OSError:
            return self.rows
        end = chunk.rfind(b"\n") + 1  # a line still being written is read next time
        for line in chunk[:end].splitlines():
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(obj, dict):
                self.rows.append(obj)
        self.offset += end
        return self.rows


def sparkline(values: Sequence[float], width: int) -> str:
    """``values`` in at most ``width`` block characters (each the mean of its share), low ▁ to high █."""
    values = [v for v in values if math.isfinite(v)]
    if not values or width <= 0:
        return ""
    if len(values) > width:  # buckets of consecutive values
        edges = [round(k * len(values) / width) for k in range(width + 1)]
        values = [sum(values[a:b]) / (b - a) for a, b in zip(edges, edges[1:]) if b > a]
    lo, hi = min(values), max(values)
    span = hi - lo or 1.0
    return "".join(BLOCKS[min(len(BLOCKS) - 1, int((v - lo) / span * len(BLOCKS)))] for v in values)


def render(rows: Sequence[dict], width: int) -> str:
    """The loss chart and the sparklines for ``rows`` (metrics objects), fitted to ``width`` columns."""
    train, val = series(rows, "loss"), series(rows, "val_loss")
    if not train:
        return "waiting for the first step…"
    chart = terminal_plot(train, val, width=max(20, width - 12), height=10)
    lines = [chart, ""]
    for key, val_key, label in SPARKS:
        pts = series(rows, key)
        if not pts:
            continue
        last = f"{pts[-1][1]:.3g}"
        vals = series(rows, val_key) if val_key else []
        if vals:
            last += f" (val {vals[-1][1]:.3g})"
        spark = sparkline([v for _, v in pts], max(10, width - 34))
        lines.append(f"{label:>10} {spark}  {last}")
    return "\n".join(lines)


class LivePlotScreen(Screen):
    """The curves of the run in ``out``, redrawn every second; Esc or q closes."""

    DEFAULT_CSS = """
    LivePlotScreen #plot-head { height: auto; padding: 0 1; background: $boost; }
    LivePlotScreen #plot-body { height: 1fr; padding: 1 1; }
    """
    BINDINGS = [Binding("escape,q", "close", "Close")]

    def __init__(self, out: Path, status: Callable[[], str] | None = None, title: str = "") -> None:
        super().__init__()
        self.out = Path(out)
        self.tail = MetricsTail(self.out / "metrics.jsonl")
        self.status = status  # the run's one-line status (the session's run), or None for a finished folder
        self.title_text = title or f"Fine-tuning curves: {self.out}"

    def compose(self):
        yield Static("", id="plot-head")
        with VerticalScroll(id="plot-body"):
            yield Static("", id="plot-chart")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.redraw()
        self.set_interval(1.0, self.redraw)

    def redraw(self) -> None:
        rows = self.tail.read()
        head = self.title_text + (f"\n{self.status()}" if self.status is not None else "")
        head += f"\n{len(rows)} step(s) from {self.tail.path} · refreshed every second · Esc closes"
        self.query_one("#plot-head", Static).update(Content(head))
        self.query_one("#plot-chart", Static).update(Content(render(rows, self.size.width - 2)))

    def action_close(self) -> None:
        self.dismiss(None)
