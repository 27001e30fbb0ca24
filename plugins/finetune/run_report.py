"""``chatcli finetune report DIR``: what a run folder says, printed (nothing is opened or written).

Reads, each only when present: ``training_args.json`` (the run's settings),
``summary.json`` (how it ended), ``metrics.jsonl`` (a line per step; lines that
do not parse are counted and skipped, so a run still writing can be reported),
``data_split.json`` (training / held-out sizes) and ``what_changed.json`` (the
"what changed" report a finished run writes, shown with its own formatter,
:func:`chatcli_finetune.what_changed.lines`, when that can read it; else its
verdict and advice). A folder with neither settings nor metrics is refused.

The metrics table has a column per metric the run logs — step, epoch, loss,
validation loss, learning rate, then the others (accuracy, margin, grad norm,
reward, KL...) — and, unless ``all_steps``, about :data:`ROWS` rows: evenly spaced
steps plus every step with a validation value and the last step.
"""

from __future__ import annotations

import json
from pathlib import Path

from chatcli.errors import UsageError

ROWS = 25
FIRST = ("step", "epoch", "loss", "val_loss", "lr")
NOT_SHOWN = {"event", "total_steps", "tokens", "tokens_total", "elapsed_s", "eta_s"}  # bookkeeping, not curves
FILES = ("training_args.json", "summary.json", "data_split.json", "what_changed.json")


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{path} cannot be read ({e})") from None


def read_metrics(path: Path) -> tuple[list[dict], int]:
    """The metrics objects of ``metrics.jsonl`` and how many lines were skipped as unreadable."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return [], 0
    except OSError as e:
        raise UsageError(f"{path} cannot be read ({e.strerror or e})") from None
    rows, bad = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(obj, dict) and isinstance(obj.get("step"), int):
            rows.append(obj)
        else:
            bad += 1
    return rows, bad


def load_report(out: Path | str) -> dict:
    """Everything the folder holds, as one JSON-ready dict (``--json`` prints it)."""
    out = Path(out).expanduser()
    if not out.is_dir():
        raise UsageError(f"no run folder at {out}: give the --out folder of 'chatcli finetune'")
    settings, summary, split, changed = (_json(out / name) for name in FILES)
    metrics, bad = read_metrics(out / "metrics.jsonl")
    if settings is None and not metrics:
        raise UsageError(f"{out} is not a fine-tuning run folder (no training_args.json, no metrics.jsonl)")
    return {
        "out": str(out), "settings": settings, "summary": summary, "columns": columns(metrics), "metrics": metrics,
        "unreadable_metrics_lines": bad,
        "split": {"train": len(split.get("train_lines", [])), "held_out": len(split.get("val_lines", []))}
        if isinstance(split, dict) else None,
        "what_changed": changed,
    }  # fmt: skip


def columns(metrics: list[dict]) -> list[str]:
    """The metrics table's columns: :data:`FIRST` where present, then every other numeric metric, sorted."""
    keys = {k for m in metrics for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    keys -= NOT_SHOWN
    return [k for k in FIRST if k in keys] + sorted(keys - set(FIRST))


def shown_rows(metrics: list[dict], all_steps: bool = False, rows: int = ROWS) -> list[dict]:
    """Evenly spaced steps, every validated step and the last (every step with ``all_steps``)."""
    if all_steps or len(metrics) <= rows:
        return list(metrics)
    every = -(-len(metrics) // rows)
    keep = {k for k in range(0, len(metrics), every)} | {len(metrics) - 1}
    keep |= {k for k, m in enumerate(metrics) if "val_loss" in m}
    return [metrics[k] for k in sorted(keep)]


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return str(value) if isinstance(value, int) else f"{value:.4g}"  # 4 digits keep a dozen columns in 80


def what_changed_lines(report: dict) -> list[str]:
    """The what-changed report in its own words (its module's formatter), or its verdict and advice."""
    try:
        from chatcli_finetune.what_changed import lines

        return list(lines(report))
    except Exception:  # another engineer's format, possibly newer than this reader: fall back to its verdict
        found = [f"verdict: {report.get('verdict', '?')}"]
        if report.get("advice"):
            found.append(str(report["advice"]))
        return found


def render_report(data: dict, all_steps: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    console.print(Text(f"run folder {data['out']}", style="bold"))
    if data["settings"]:
        table = Table(show_header=False, box=None, padding=(0, 2, 0, 0), title="settings", title_justify="left")
        table.add_column(style="cyan")
        table.add_column()
        for k, v in data["settings"].items():
            table.add_row(k, Text(str(v)))
        console.print(table)
    if data["split"]:
        console.print(f"data: {data['split']['train']} training / {data['split']['held_out']} held-out examples",
                      highlight=False)  # fmt: skip
    if data["summary"]:
        s = data["summary"]
        bits = [f"{s.get('status', '?')} after {s.get('steps', '?')} of {s.get('total_steps', '?')} steps"]
        for key, label in (("final_loss", "final loss"), ("val_loss", "val loss"), ("val_accuracy", "val accuracy"),
                           ("elapsed_s", "seconds"), ("peak_memory_mb", "peak MB")):  # fmt: skip
            if isinstance(s.get(key), (int, float)):
                bits.append(f"{label} {_cell(s[key])}")
        console.print(Text("summary: " + ", ".join(bits)))
    metrics = data["metrics"]
    if metrics:
        rows = shown_rows(metrics, all_steps)
        note = "" if len(rows) == len(metrics) else f" ({len(rows)} of {len(metrics)} steps; --all shows every step)"
        table = Table(box=None, padding=(0, 1, 0, 0), header_style="bold", title=f"metrics{note}", title_justify="left")
        for col in data["columns"]:
            table.add_column(col.replace("_", "\n"), justify="right", no_wrap=True)  # val_loss -> two header lines
        for m in rows:
            table.add_row(*(_cell(m.get(col)) for col in data["columns"]))
        console.print(table)
    else:
        console.print("metrics: none yet", highlight=False)
    if data["unreadable_metrics_lines"]:
        console.print(f"({data['unreadable_metrics_lines']} unreadable line(s) of metrics.jsonl skipped)", highlight=False)
    if data["what_changed"]:
        console.print(Text("what changed:", style="bold"))
        for line in what_changed_lines(data["what_changed"]):
            console.print(Text("  " + line))
