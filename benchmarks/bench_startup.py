"""Start-up time of ``chatcli generate "hi" --max-tokens 1`` (issue 8), printed, never asserted.

    .venv/bin/python benchmarks/bench_startup.py [--runs 5] [--threads N] [--model NAME] [--compare DIR ...]

Issue 8's target: the whole command at most 1.5 s above a bare ``python -c "import torch"``.
Each round runs, one after the other (interleaved, so a busy neighbour disturbs every
variant alike): ``import torch`` alone; then for each code tree (this checkout, and
every ``--compare`` DIR, e.g. ``git archive OLD | tar -x -C DIR``) the real command as a
whole process, and the same command in a child that times its phases. Medians of the
rounds are printed:

* ``import torch``; ``chatcli import`` (chatcli.cli, the commands, argument parsing, up
  to the model load); ``tokenizer`` (tokenizer and chat template); ``model load`` (the
  rest of ``load_engine``: resolving the name, weights, warm-up); ``first token`` (chat
  template, prefill, the first step); ``process`` (the whole command, from outside: wall
  time, and CPU time, user + system, which a busy machine inflates far less than wall time
  when torch runs one thread).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("import torch", "chatcli import", "tokenizer", "model load", "first token", "after")


def child(model: str) -> None:
    """Run the command in this process with timers around its phases; print them as JSON."""
    t0 = time.perf_counter()
    import torch  # noqa: F401

    t_torch = time.perf_counter()
    import chatcli.cli.main as cli
    from chatcli.engine import loader

    marks: dict[str, float] = {}
    spans = {"tokenizer": 0.0}
    real_tokenizer, real_load = loader._tokenizer, loader.load_engine
    real_chat = loader.LoadedModel.chat

    def timed_tokenizer(*a, **k):
        t = time.perf_counter()
        try:
            return real_tokenizer(*a, **k)
        finally:
            spans["tokenizer"] += time.perf_counter() - t

    def timed_load(*a, **k):
        marks.setdefault("load start", time.perf_counter())
        engine = real_load(*a, **k)
        marks["load end"] = time.perf_counter()
        return engine

    def timed_chat(self, *a, **k):
        for event in real_chat(self, *a, **k):
            if type(event).__name__ == "Step":
                marks.setdefault("first step", time.perf_counter())
            yield event

    loader._tokenizer, loader.load_engine, loader.LoadedModel.chat = timed_tokenizer, timed_load, timed_chat
    args = ["generate", "hi", "--max-tokens", "1", "--temperature", "0", "--model", model]
    out = sys.stdout
    sys.stdout = open(os.devnull, "w")
    try:
        cli.main(args)
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    finally:
        sys.stdout = out
    t_end = time.perf_counter()
    load = marks["load end"] - marks["load start"]
    print(json.dumps({
        "import torch": t_torch - t0,
        "chatcli import": marks["load start"] - t_torch,
        "tokenizer": spans["tokenizer"],
        "model load": load - spans["tokenizer"],
        "first token": marks["first step"] - marks["load end"],
        "after": t_end - marks["first step"],
    }))


def _env(tree: Path, threads: int | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a real install has its .pyc files; so do these runs
    return env


def _wall(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall, CPU) seconds of one process; CPU (user + system) is what a busy machine inflates least."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    # cwd: the tree itself, since ``python -m`` puts the working directory before PYTHONPATH.
    r = subprocess.run(cmd, env=env, cwd=env["PYTHONPATH"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with PYTHONPATH={env['PYTHONPATH']}: {r.stderr.strip()[-500:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP_NUM_THREADS for every run (1 keeps a shared, busy machine from stalling torch's threads).")
    ap.add_argument("--compare", type=Path, action="append", default=[], help="Another code tree to time alike.")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.model)
        return
    trees = [ROOT, *[p.resolve() for p in a.compare]]
    py = sys.executable
    torch_walls: list[tuple[float, float]] = []
    walls: dict[Path, list[tuple[float, float]]] = {t: [] for t in trees}
    phases: dict[Path, list[dict]] = {t: [] for t in trees}
    script = str(Path(__file__).resolve())
    gen = ["-m", "chatcli", "generate", "hi", "--max-tokens", "1", "--temperature", "0", "--model", a.model]
    for tree in trees:  # once untimed: .pyc files written, the weights in the page cache
        _wall([py, *gen], _env(tree, a.threads))
    for r in range(a.runs):
        torch_walls.append(_wall([py, "-c", "import torch"], _env(ROOT, a.threads)))
        for tree in trees:
            walls[tree].append(_wall([py, *gen], _env(tree, a.threads)))
            res = subprocess.run([py, script, "--child", "--model", a.model], env=_env(tree, a.threads),
                                 capture_output=True, text=True)
            if res.returncode != 0:  # a tree being edited can fail a run; say so and go on
                print(f"{tree}: phase run failed: {res.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                continue
            phases[tree].append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(f"round {r + 1}/{a.runs} done", file=sys.stderr)
    base = statistics.median(w for w, _ in torch_walls)
    base_cpu = statistics.median(c for _, c in torch_walls)
    print(f"python -c 'import torch' (process): {base:.2f} s wall, {base_cpu:.2f} s CPU (median of {a.runs})")
    header = f"{'phase (median s)':18s}" + "".join(f"{str(t)[-28:]:>30s}" for t in trees)
    print(header)
    for ph in PHASES:
        print(f"{ph:18s}" + "".join(
            f"{statistics.median(p[ph] for p in phases[t]):30.2f}" if phases[t] else f"{'-':>30s}" for t in trees
        ))
    for label, i, ref in (("process wall", 0, base), ("process CPU", 1, base_cpu)):
        print(f"{label:18s}" + "".join(f"{statistics.median(w[i] for w in walls[t]):30.2f}" for t in trees))
        print(f"{'  above torch':18s}" + "".join(f"{statistics.median(w[i] for w in walls[t]) - ref:30.2f}" for t in trees))


if __name__ == "__main__":
    main()
