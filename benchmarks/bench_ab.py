"""A/B decode and prefill speed of two chatcli source trees, interleaved on one machine.

    .venv/bin/python benchmarks/bench_ab.py --tree A=/path/to/old/checkout --tree B=. \
        [--dtypes float32,bfloat16,int4] [--threads 1,2] [--rounds 3] [--tokens 64] [--prompt 512]

Each measurement runs in its own subprocess with ``PYTHONPATH`` pointing at one tree
(so two versions of the engine never share a process), and the configurations are
interleaved round by round (A, B, A, B, ...): a neighbour's load on a shared machine
then disturbs both sides alike. A subprocess loads the model, warms it up, times a
``--prompt``-token prefill (time to first token of a one-token answer, fresh cache)
and a greedy ``--tokens``-token decode (wall clock and process CPU time), and prints
one JSON line. The table gives medians with min and max over the rounds. Numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
# The editable install's finder would win over PYTHONPATH: drop it so the tree under test is imported.
sys.meta_path = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
import torch
threads, dtype, model, tokens, prompt_len = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
import chatcli
from chatcli.engine.events import Done
from chatcli.engine.params import SamplingParams
print(chatcli.__file__, flush=True)
quant = dtype if dtype in ("int8", "int4") else None  # int8/int4: float32 activations, quantised weights
engine = chatcli.load_model(model, dtype="float32" if quant else dtype, device="cpu", **({"quantize": quant} if quant else {}))
gen = engine.generator
g = torch.Generator().manual_seed(0)
prompt = torch.randint(100, 40000, (prompt_len,), generator=g).tolist()

def run(ids, n):
    # (wall s, cpu s) from the start to the first token, and from the first token to the last.
    gen.reset()
    marks = [(time.perf_counter(), time.process_time())]
    for ev in gen.stream(ids, SamplingParams(temperature=0.0, max_tokens=n), eos_ids=()):
        if len(marks) == 1 or isinstance(ev, Done):
            marks.append((time.perf_counter(), time.process_time()))
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks, marks[1:])]

run(prompt[:16], 4)  # warm-up
pre = min((run(prompt, 1)[0] for _ in range(2)), key=lambda t: t[0])
dec = run(prompt[:32], tokens)[1]
print(json.dumps({"prefill": prompt_len / pre[0], "prefill_cpu": prompt_len / pre[1],
                  "decode": (tokens - 1) / dec[0], "decode_cpu": (tokens - 1) / dec[1]}))
"""


# Wall-clock rates, and rates per CPU-second of the process (on a machine shared with other
# jobs a one-thread run's CPU time is far less disturbed than its wall time; with more
# threads it also counts OpenMP's spinning, so read the wall figure there).
KEYS = ("decode", "decode_cpu", "prefill", "prefill_cpu")


def measure(tree: str, dtype: str, threads: int, model: str, tokens: int, prompt: int) -> dict:
    # Calibration off: the trees' code paths are compared at the same kernel choices.
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), OMP_NUM_THREADS=str(threads), CHATCLI_CALIBRATE="0")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(threads), dtype, model, str(tokens), str(prompt)],
        env=env, cwd=os.path.abspath(tree), capture_output=True, text=True, check=False,  # '' on sys.path = the tree
    )
    if not out.stdout.startswith(os.path.abspath(tree)):
        raise SystemExit(f"{tree}: imported chatcli from {out.stdout.splitlines()[:1]}, not from the tree")
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"{tree} {dtype} t{threads} failed:\n{out.stderr[-2000:]}")
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", action="append", required=True, help="NAME=PATH of a chatcli checkout")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--dtypes", default="float32,bfloat16", help="also int8, int4: float32 with quantised weights")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=512)
    args = ap.parse_args()
    trees = [t.split("=", 1) for t in args.tree]
    configs = [(d, int(t)) for d in args.dtypes.split(",") for t in args.threads.split(",")]
    results: dict[tuple, list[dict]] = {}
    for r in range(args.rounds):
        for dtype, threads in configs:
            for name, path in trees:
                res = measure(path, dtype, threads, args.model, args.tokens, args.prompt)
                results.setdefault((dtype, threads, name), []).append(res)
                print(f"round {r} {dtype} t{threads} {name}: " + " ".join(f"{k} {res[k]:.1f}" for k in KEYS),
                      file=sys.stderr, flush=True)
    print(f"{args.model}: decode {args.tokens} tokens greedy, prefill {args.prompt} tokens; "
          f"median [min-max] of {args.rounds} interleaved rounds")
    print(f"{'dtype':9} {'thr':>3} {'tree':6} " + " ".join(f"{k + ' tok/s':>22}" for k in KEYS))
    for (dtype, threads, name), runs in results.items():
        cells = []
        for key in KEYS:
            v = [x[key] for x in runs]
            cells.append(f"{statistics.median(v):8.1f} [{min(v):.1f}-{max(v):.1f}]")
        print(f"{dtype:9} {threads:3d} {name:6} " + " ".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main()
