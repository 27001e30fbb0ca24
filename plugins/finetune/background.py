"""A fine-tuning run in a separate process, watched from the chat (``/finetune``).

:class:`BackgroundRun` starts ``python -m chatcli finetune KIND DATA --out DIR --json
...`` (training and chatting then share the CPU; the chat's answers are slower
meanwhile), reads its JSON lines on a daemon thread, and exposes the latest
progress (step, loss, tokens/s, ETA) as :meth:`status_line`, the plan (trainable
parameters, predicted memory), the settings chosen from the data (``defaults``), the
finished run's "what changed" report (``what_changed``) and its summary (the measured
memory peak), each handed to ``on_event`` as it arrives. :meth:`stop` sends
SIGTERM: the trainer finishes the current step and writes a checkpoint, so the
same command with ``--resume`` continues it. Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class BackgroundRun:
    def __init__(self, kind: str, data: Path, out: Path, extra: Sequence[str] = (), model: str | None = None,
                 on_end: Callable[["BackgroundRun"], None] | None = None,
                 on_event: Callable[[str, dict], None] | None = None):  # fmt: skip
        self.kind, self.data, self.out = kind, Path(data), Path(out)
        self.cmd = [sys.executable, "-m", "chatcli", "finetune", kind, str(data), "--out", str(out), "--json", *extra]
        if model and "--model" not in extra:
            self.cmd += ["--model", model]
        self.on_end = on_end
        self.on_event = on_event  # (event, object) for "plan", "defaults", "what_changed" and "summary", on the watcher thread
        self.defaults: list[str] = []  # lines: the settings chosen from the data, and why
        self.what_changed: dict = {}  # the report of a finished run (its "lines" are for people)
        self.last: dict = {}
        self.plan: dict = {}
        self.summary: dict = {}
        self.errors: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.ended_at: float | None = None  # time.monotonic() when the process ended
        self.loaded = False  # the result was hot-loaded into the chat's model
        self.auto_load = False  # --load: the result loads by itself when the run finishes
        self._threads: list[threading.Thread] = []

    def start(self) -> "BackgroundRun":
        self.out.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # Leave a core to the chat: training threads would otherwise take every CPU.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) - 1)))
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for target in (self._read_stdout, self._read_stderr):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            event = obj.get("event")
            if event == "plan":
                self.plan = obj
            elif event == "step":
                self.last = obj
            elif event == "summary":
                self.summary = obj
            elif event == "defaults":
                self.defaults = list(obj.get("lines") or [])
            elif event == "what_changed":
                self.what_changed = obj
            if event in ("plan", "defaults", "what_changed", "summary") and self.on_event is not None:
                self.on_event(event, obj)
        self.proc.wait()
        self.ended_at = time.monotonic()
        if self.on_end is not None:
            self.on_end(self)

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.strip():
                self.errors.append(line.rstrip())
                del self.errors[:-20]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def finished(self) -> bool:
        return not self.running and self.summary.get("status") == "finished"

    def stop(self) -> None:
        if self.running:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float | None = None) -> int | None:
        if self.proc is None:
            return None
        rc = self.proc.wait(timeout)
        for t in self._threads:
            t.join(timeout)
        return rc

    def status_line(self) -> str:
        """One line for the status bar: step, loss, tokens/s, ETA (or how it ended)."""
        if self.proc is None:
            return f"finetune {self.kind}: not started"
        if not self.running:
            if self.finished:
                return f"finetune {self.kind}: done, loss {self.summary.get('final_loss', 0):.3f} -> {self.out} (/finetune load)"
            if self.summary.get("status") == "stopped":
                return f"finetune {self.kind}: stopped at step {self.summary.get('steps')} (resume with --resume)"
            err = next((e for e in reversed(self.errors) if "error" in e.lower()), self.errors[-1] if self.errors else "")
            return f"finetune {self.kind}: failed (exit {self.proc.returncode}) {err}".rstrip()
        m = self.last
        if not m:
            return f"finetune {self.kind}: loading (answers are slower while training)"
        eta = int(m.get("eta_s", 0))
        # RL: the step's mean reward and KL to the base model (bits/token) say more than tokens/s.
        rl = f"reward {m['reward']:+.3f} KL {m.get('kl', 0.0):.3f} " if "reward" in m else f"{m.get('tokens_per_s', 0):.0f} tok/s "
        return (f"finetune {self.kind}: step {m['step']}/{m['total_steps']} loss {m['loss']:.3f} "
                f"{rl}ETA {eta // 60}:{eta % 60:02d} (answers slower meanwhile)")  # fmt: skip
