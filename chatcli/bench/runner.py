"""Runs a bench: one worker subprocess per (figure group, system), and collects the report.

Systems run side by side, group by group (chatcli's prefill, then transformers'
prefill, ...), so both see the same machine load within a few seconds of each
other; the groups the targets read (prefill, decode, train: :data:`BALANCED`) run each
system twice in a balanced order (chatcli, transformers, transformers, chatcli), their
runs pooled, so a machine that drifts during the group weighs on every system alike.
Each worker is a fresh ``python -m chatcli.bench.worker`` process: imports,
memory-mapped weights and peak RSS never leak from one figure to another. A
baseline that fails is reported (its column says why) and the run goes on; a chatcli
worker that fails is reported too, and the command then exits with an error.

The report is a plain dict, the object ``--json`` prints (schema ``chatcli-bench/1``):
``machine``, ``settings``, ``systems``, ``figures`` (each with per-system
``median``/``min``/``max``/``runs`` or ``error``, and ``ratio`` per baseline),
``reference`` (``import_torch_s``, ``read_gb_s``), ``floor``, ``targets``, ``notes``, ``info``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from chatcli.bench import process_start
from chatcli.bench.bandwidth import floor_tokens_per_s
from chatcli.bench.figures import figures
from chatcli.bench.machine import machine_info
from chatcli.bench.spec import BenchSpec
from chatcli.bench.stats import summary
from chatcli.bench.targets import evaluate
from chatcli.bench.worker import MARKER

SCHEMA = "chatcli-bench/1"
WORKER_TIMEOUT_S = 900.0
SUPPORTS = {
    "chatcli": ("prefill", "decode", "turns", "candidates", "adapters", "train"),
    "transformers": ("prefill", "decode", "turns", "candidates", "adapters", "train"),  # train: transformers + PEFT
    "transformers-loop": ("prefill", "decode", "turns"),
    "llama.cpp": ("prefill", "decode", "turns"),
}
# Groups whose systems run twice in a balanced order (A, B, C, C, B, A): the groups the targets read. A shared
# VM's speed drifts between the systems' workers: training runs of the same code read 1.23x and 1.43x against
# PEFT twenty minutes apart, and bf16 decode 1.28x-1.37x against the transformers loop in bench runs while the
# same process decoded at 33-39 tok/s between them, on this project's machine.
BALANCED = ("prefill", "decode", "train")


def run_worker(system: str, group: str, spec: BenchSpec, timeout: float = WORKER_TIMEOUT_S,
               env: dict[str, str] | None = None) -> dict:
    """One worker process (``env``: its environment, default this one's); its result object, or
    ``{"error": "one line"}``."""
    cmd = [sys.executable, "-m", "chatcli.bench.worker", system, group, spec.to_json()]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"took more than {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            result = json.loads(line[len(MARKER):])
            result.setdefault("info", {})["worker_wall_s"] = time.perf_counter() - t0
            return result
    tail = proc.stderr.strip().splitlines()
    return {"error": f"worker exited {proc.returncode}: {tail[-1] if tail else 'no output'}"}


class _Collector:
    def __init__(self) -> None:
        self.values: dict[str, dict[str, list[float]]] = {}  # figure -> system -> runs
        self.errors: dict[str, dict[str, str]] = {}  # figure -> system -> why
        self.skipped: dict[str, dict[str, str]] = {}  # figure -> system -> why it was not run
        self.loads: dict[str, list[float]] = {}  # system -> model load seconds, one per worker
        self.info: dict[str, dict[str, dict]] = {}  # system -> group -> info
        self.reference: dict[str, list[float]] = {}
        self.notes: list[str] = []

    def add(self, system: str, group: str, result: dict, figure_ids: list[str], again: bool = False) -> None:
        """One worker's result; ``again``: a second worker of the same system and group, whose runs join
        the first one's (its notes, which repeat the first's, are left out)."""
        if "error" in result:
            for fid in figure_ids:
                self.errors.setdefault(fid, {})[system] = result["error"]
            return
        for fid, runs in result.get("figures", {}).items():
            kept = self.values.setdefault(fid, {})
            kept[system] = (kept.get(system, []) if again else []) + list(runs)
        for fid, why in result.get("info", {}).get("skipped", {}).items():  # a figure this system cannot give
            self.skipped.setdefault(fid, {})[system] = why
        if "load_s" in result:
            self.loads.setdefault(system, []).append(result["load_s"])
        if "info" in result:  # workers only (the start group's children report through their figures)
            self.info.setdefault(system, {})[group] = {**result["info"], "peak_rss_mb": result.get("peak_rss_mb"),
                                                       "threads": result.get("threads")}  # fmt: skip
        if not again:
            self.notes.extend(result.get("notes", []))


def run_bench(
    spec: BenchSpec, progress: Callable[[str], None] | None = None, unavailable: dict[str, str] | None = None
) -> dict:
    """Run every group of ``spec``; ``unavailable``: baselines not run, with the reason their column shows."""
    if "adapters" in spec.groups and spec.adapter_dir is None:
        from chatcli.bench.adapter import write_random_adapter

        with tempfile.TemporaryDirectory(prefix="chatcli-bench-") as tmp:
            folder = write_random_adapter(Path(spec.path), Path(tmp) / "bench-lora", spec.sizes.adapter_rank)
            return run_bench(spec.with_(adapter_dir=str(folder)), progress, unavailable)
    say = progress or (lambda _msg: None)
    unavailable = unavailable or {}
    figs = figures(spec.sizes)
    by_group: dict[str, list[str]] = {}
    for f in figs:
        by_group.setdefault(f.group, []).append(f.id)
    c = _Collector()
    for group in spec.groups:
        if group == "start":
            _start(spec, c, say, unavailable)
        elif group == "bandwidth":
            say("bandwidth: single-stream read")
            result = run_worker("python", "bandwidth", spec)
            if "error" in result:
                c.notes.append(f"read bandwidth not measured: {result['error']}")
            else:
                c.reference["read_gb_s"] = result["figures"]["read_gb_s"]
        elif group == "compile":  # chatcli only: a cold and a warm worker (chatcli.bench.compile_group)
            from chatcli.bench.compile_group import merge, run_group

            say("compile: chatcli, cold then warm inductor cache")
            c.add("chatcli", group, merge(*run_group(spec, run_worker)), by_group.get(group, []))
        else:
            systems = [s for s in spec.systems if group in SUPPORTS[s] and s not in unavailable]
            order = systems + systems[::-1] if group in BALANCED and len(systems) > 1 else systems
            for i, system in enumerate(order):
                again = system in order[:i]
                say(f"{group}: {system}" + (" again (balanced order)" if again else ""))
                c.add(system, group, run_worker(system, group, spec), by_group.get(group, []), again=again)
            if order != systems:
                c.notes.append(f"{group}: each system ran twice, in the order {', '.join(order)}: a machine that "
                               "speeds up or slows down during the run weighs on every system alike")  # fmt: skip
            if group == "prefill" and spec.dtype != "float32":
                say("prefill: chatcli at float32 (the bfloat16 target compares with it)")
                result = run_worker("chatcli", group, spec.with_(dtype="float32", quantize=None))
                if "error" not in result:
                    c.values["prefill_f32_tps"] = {"chatcli": result["figures"]["prefill_tps"]}
    for system, why in unavailable.items():
        for group in (g for g in spec.groups if g in SUPPORTS[system] or g == "start"):
            for fid in by_group.get(group, []) + ["load_s"]:
                c.skipped.setdefault(fid, {})[system] = why
    for system, loads in c.loads.items():
        # The first worker of a system pages the weights in from disk: its load is the warm-up.
        c.values.setdefault("load_s", {})[system] = loads[1:] if len(loads) > 1 else loads
    return _report(spec, c)


def _start(spec: BenchSpec, c: _Collector, say, unavailable: dict[str, str]) -> None:
    for name, got in process_start.measure(spec, say, skip=tuple(unavailable)).items():
        if name == "python":
            if "error" in got:
                c.notes.append(f"the import torch reference failed: {got['error']}")
            else:
                c.reference["import_torch_s"] = got["start_s"]
            continue
        c.add(name, "start", {"figures": got} if "error" not in got else got, ["start_s", "peak_rss_mb"])


def _report(spec: BenchSpec, c: _Collector) -> dict:
    figs = figures(spec.sizes)
    if "prefill_f32_tps" in c.values:
        from chatcli.bench.figures import Figure

        at = next(i for i, f in enumerate(figs) if f.id == "prefill_tps") + 1
        figs.insert(at, Figure("prefill_f32_tps", "prefill tok/s at float32 (bf16 target)", "tok/s", True, "prefill"))
    rows = []
    for f in figs:
        got = c.values.get(f.id, {})
        errors, skipped = c.errors.get(f.id, {}), c.skipped.get(f.id, {})
        if not got and not errors:
            continue
        results = {s: summary(v) for s, v in got.items() if v}
        results.update({s: {"error": e} for s, e in errors.items()})
        results.update({s: {"skipped": e} for s, e in skipped.items()})
        ratio = {}
        if "median" in results.get("chatcli", {}):
            for base in spec.systems[1:]:
                if "median" in results.get(base, {}):
                    ratio[base] = f.ratio(results["chatcli"]["median"], results[base]["median"])
        rows.append({**asdict(f), "results": results, "ratio": ratio})
    reference = {k: summary(v) for k, v in c.reference.items() if v}
    report = {
        "schema": SCHEMA,
        "machine": machine_info(),
        "settings": {k: v for k, v in json.loads(spec.to_json()).items() if k != "adapter_dir"},
        "systems": list(spec.systems),
        "figures": rows,
        "reference": reference,
        "floor": _floor(c, reference, rows),
        "notes": c.notes,
        "info": c.info,
    }
    report["targets"] = evaluate(report)
    return report


def _floor(c: _Collector, reference: dict, rows: list[dict]) -> dict | None:
    """Bytes read per decoded token and the tokens/s memory allows (needs decode and bandwidth)."""
    info = c.info.get("chatcli", {}).get("decode")
    if not info or "read_gb_s" not in reference or "weight_bytes" not in info:
        return None
    gb_s = reference["read_gb_s"]["median"]
    per_token, tps = floor_tokens_per_s(gb_s, info["weight_bytes"], info["kv_bytes_per_position"], info["mean_context"])
    floor = {"weight_bytes": info["weight_bytes"], "kv_bytes_per_position": info["kv_bytes_per_position"],
             "mean_context": info["mean_context"], "bytes_per_token": per_token, "read_gb_s": gb_s,
             "tokens_per_s": tps}  # fmt: skip
    decode = next((r for r in rows if r["id"] == "decode_tps"), None)
    if decode and "median" in decode["results"].get("chatcli", {}):
        floor["decode_share"] = decode["results"]["chatcli"]["median"] / tps
    return floor
