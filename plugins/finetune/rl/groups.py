"""``OUT/groups.jsonl``: every step's groups — the answers, their rewards and advantages — and their view.

One JSON object per group (a prompt and its G answers) per optimizer step::

    {"step": 3, "prompt": "Why is the sea salty?", "prompt_index": 5, "mean_reward": -0.8,
     "std_reward": 0.4, "answers": [{"text": ..., "reward": -0.6, "advantage": 0.5,
     "tokens": 48, "finish_reason": "length"}, ...]}

Lines are appended, flushed and fsynced once per step (a crash loses at most the step
being written); ``--resume`` drops the lines of steps after the checkpoint it continues
from, as it does for ``metrics.jsonl``. :func:`last_step` reads the newest step back and
:func:`groups_table` shows it: a positive advantage pushed that answer up (↑), a
negative one pushed it down (↓).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rich.table import Table
from rich.text import Text

from chatcli.errors import ChatcliError

GROUPS_NAME = "groups.jsonl"
SNIPPET = 72


class GroupLog:
    """Appends each step's groups to ``OUT/groups.jsonl``."""

    def __init__(self, out: Path):
        self.path = Path(out) / GROUPS_NAME

    def append(self, groups: list[dict]) -> None:
        if not groups:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write("".join(json.dumps(g, ensure_ascii=False) + "\n" for g in groups))
            f.flush()
            os.fsync(f.fileno())

    def truncate(self, step: int) -> None:
        """Keep the groups of steps <= ``step`` (the checkpoint a resumed run continues from)."""
        if not self.path.is_file():
            return
        keep = [line for line, g in _lines(self.path) if g is not None and g.get("step", 0) <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(k + "\n" for k in keep), encoding="utf-8")
        os.replace(tmp, self.path)


def _lines(path: Path):
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash: skipped
            obj = None
        yield line, obj if isinstance(obj, dict) else None


def last_step(out: Path) -> tuple[int, list[dict]]:
    """The newest step in ``out/groups.jsonl`` and its groups."""
    path = Path(out).expanduser() / GROUPS_NAME
    if not path.is_file():
        raise ChatcliError(f"no {GROUPS_NAME} in {out}: it is written by 'finetune rl' runs, one line per group and step")
    groups = [g for _, g in _lines(path) if g is not None and isinstance(g.get("answers"), list)]
    if not groups:
        raise ChatcliError(f"{path} holds no group yet: the first step is still running")
    step = max(int(g.get("step", 0)) for g in groups)
    return step, [g for g in groups if int(g.get("step", 0)) == step]


def groups_table(step: int, groups: list[dict]) -> Table:
    """One row per answer, grouped by prompt: reward, advantage and whether it was pushed up or down."""
    table = Table(title=f"step {step}: each answer's reward and advantage (↑ pushed up, ↓ pushed down)",
                  title_justify="left", box=None, pad_edge=False)  # fmt: skip
    table.add_column("", width=1)
    table.add_column("answer")
    table.add_column("reward", justify="right")
    table.add_column("advantage", justify="right")
    for k, g in enumerate(groups):
        if k:
            table.add_row("", "", "", "")
        table.add_row("", Text(f"prompt: {_snippet(str(g.get('prompt', '')))}  (mean reward {g.get('mean_reward', 0):+.3f})",
                               style="bold"), "", "")  # fmt: skip
        for a in g["answers"]:
            adv = float(a.get("advantage", 0.0))
            arrow, style = ("↑", "green") if adv > 1e-6 else ("↓", "red") if adv < -1e-6 else ("·", "dim")
            text = _snippet(str(a.get("text", ""))) + ("" if a.get("finish_reason") != "length" else " [cut]")
            table.add_row(Text(arrow, style=style), text, f"{float(a.get('reward', 0.0)):+.3f}", Text(f"{adv:+.2f}", style=style))
    return table


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat[:SNIPPET] + ("…" if len(flat) > SNIPPET else "")


def groups_view(folder: str | None, run=None) -> Table:
    """``/finetune groups [DIR]``: the last step of DIR, or of this session's rl run."""
    if folder is None:
        if run is None or run.kind != "rl":
            raise ChatcliError("no rl run in this session: /finetune groups DIR shows a 'finetune rl' folder's last step")
        folder = str(run.out)
    return groups_table(*last_step(Path(folder).expanduser()))
