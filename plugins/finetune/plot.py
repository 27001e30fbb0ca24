"""Training curves: ``loss.png`` drawn with matplotlib, and a text chart for the terminal.

:func:`write_png` draws one panel per quantity the metrics have, against the
optimizer step: the loss always, then accuracy, reward margin, reward and KL
where the run logs them (``accuracy``/``val_accuracy``, ``margin``/``val_margin``,
``reward``/``val_reward``, ``kl``/``val_kl``). Each panel shows the raw training
values as faint points, a smoothed line through them (:func:`smooth`, a centred
moving average) and the validation values as larger markers, with labelled axes,
tick numbers and a legend; the title names the run kind and the model.
matplotlib is imported inside :func:`figure` (its Agg canvas, no display), so
nothing else pays for it.
:func:`terminal_plot` draws the loss in text, one column per bucket of steps
('•' train, 'o' validation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

Series = list[tuple[float, float]]  # (step, value)

TRAIN_RGB = "#1f77b4"
VAL_RGB = "#ff7f0e"
KIND_TITLE = {"sft": "SFT", "dpo": "DPO", "reward": "Reward model", "rl": "RL"}
# (metric logged per step, its validation twin, the panel's y-axis label)
PANELS = [
    ("loss", "val_loss", "loss"),
    ("accuracy", "val_accuracy", "pair accuracy"),
    ("margin", "val_margin", "reward margin (chosen - rejected)"),
    ("reward", "val_reward", "reward"),
    ("kl", "val_kl", "KL to the base model"),
]


def series(history: Sequence[dict], key: str) -> Series:
    """(step, value) of every metrics line that has a finite ``key``."""
    out = []
    for m in history:
        v = m.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and "step" in m:
            out.append((float(m["step"]), float(v)))
    return out


def smooth(values: Sequence[float], window: int | None = None) -> list[float]:
    """A centred moving average (the mean of the ``window`` values around each, fewer at the ends).

    Centred, so the line follows a falling loss without the lag of an exponential
    average; ``window`` defaults to about an eighth of the run (odd, 3 to 51; none
    under 5 points), so a short run is drawn as it is and a long one as its trend.
    """
    n = len(values)
    if window is None:
        window = 1 if n < 5 else max(3, min(51, n // 8 | 1))
    half = window // 2
    out = []
    for i in range(n):
        part = values[max(0, i - half) : i + half + 1]
        out.append(sum(part) / len(part))
    return out


def write_png(path: Path, history: Sequence[dict], kind: str = "", model: str = "") -> Path | None:
    """Draw the run's curves into ``path`` (atomically); None when no metrics line has a loss."""
    fig = figure(history, kind, model)
    if fig is None:
        return None
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png")
    tmp.replace(path)
    return path


def figure(history: Sequence[dict], kind: str = "", model: str = ""):
    """The matplotlib ``Figure`` of :func:`write_png` (None without a loss to draw)."""
    panels = [(k, vk, label) for k, vk, label in PANELS if series(history, k) or series(history, vk)]
    if not series(history, "loss") and not series(history, "val_loss"):
        return None
    # The Agg canvas directly, not pyplot: files only, no window, no process-wide backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8, 2.6 + 2.2 * len(panels)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (key, val_key, label) in zip(axes, panels):
        train, val = series(history, key), series(history, val_key)
        if train:
            xs, ys = zip(*train)
            ax.plot(xs, ys, "o", ms=2.5, color=TRAIN_RGB, alpha=0.3, label=f"train {key} (each step)")
            ax.plot(xs, smooth(ys), "-", lw=1.8, color=TRAIN_RGB, label=f"train {key} (smoothed)")
        if val:
            vx, vy = zip(*val)
            ax.plot(vx, vy, "s--", ms=6, lw=1, color=VAL_RGB, label=f"validation {key}")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    axes[-1].set_xlabel("optimizer step")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole: no "2.5" ticks
    steps = int(max(m.get("step", 0) for m in history))
    title = f"{KIND_TITLE.get(kind, kind or 'Fine-tuning')} run" + (f" on {Path(model).name or model}" if model else "")
    fig.suptitle(f"{title}: {steps} step{'s' if steps != 1 else ''}")
    return fig


def _bounds(series: list[Series]) -> tuple[float, float, float, float]:
    pts = [p for s in series for p in s]
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    return x0, x1, y0, y1


def terminal_plot(train: Series, val: Series, width: int = 60, height: int = 12) -> str:
    """A text chart of the curves (rows: loss from high to low; columns: steps)."""
    if not train:
        return ""
    x0, x1, y0, y1 = _bounds([s for s in (train, val) if s])
    grid = [[" "] * width for _ in range(height)]

    def cell(p: tuple[float, float]) -> tuple[int, int]:
        c = min(width - 1, int((p[0] - x0) / (x1 - x0) * (width - 1) + 0.5))
        r = min(height - 1, int((y1 - p[1]) / (y1 - y0) * (height - 1) + 0.5))
        return r, c

    for p in train:
        r, c = cell(p)
        grid[r][c] = "•"
    for p in val:
        r, c = cell(p)
        grid[r][c] = "o"
    lines = []
    for i, row in enumerate(grid):
        label = f"{y1:8.3f} " if i == 0 else (f"{y0:8.3f} " if i == height - 1 else " " * 9)
        lines.append(label + "│" + "".join(row))
    lines.append(" " * 9 + "└" + "─" * width)
    lines.append(" " * 10 + f"step {x0:g}".ljust(width - 12) + f"step {x1:g}")
    legend = "• train" + ("   o validation" if val else "")
    return "\n".join([*lines, " " * 10 + legend])
