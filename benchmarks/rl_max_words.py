"""The toy RL run: shorter answers from ``chatcli finetune rl --reward rule:max-words=15``, measured.

    .venv/bin/python benchmarks/rl_max_words.py [--model NAME] [--threads N] [--keep DIR] [-- EXTRA FLAGS]

1. loads the model and answers the held-out prompts (``benchmarks/data/rl_heldout.jsonl``,
   written for this benchmark, none of them a training prompt) greedily: mean reward under
   ``rule:max-words=15``, mean words, the share of answers that ended by themselves;
2. runs the whole command ``chatcli finetune rl benchmarks/data/rl_prompts.jsonl --reward
   rule:max-words=15 --out DIR --val-split 0`` with rl's defaults (plus any EXTRA FLAGS) in
   a subprocess, and prints the settings it chose and its wall time;
3. loads the trained adapter and answers the held-out prompts again: the same figures, and
   the mean per-token KL(policy ‖ base) on those answers, in bits (exact: the full
   next-token distributions, :func:`chatcli_finetune.rl.evaluate.held_out`).

The goal it checks (printed, never asserted): the held-out reward rises, the KL stays
under 1 bit per token, and the whole benchmark ends within 10 minutes on a 2-core CPU.
Held-out answers get the run's ``--max-new-tokens`` (48 by default), as training does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROMPTS = HERE / "data" / "rl_prompts.jsonl"
HELD_OUT = HERE / "data" / "rl_heldout.jsonl"
GRADER = "rule:max-words=15"
GOAL_S = 600


def held_out_prompts() -> list[list[dict]]:
    return [[{"role": "user", "content": json.loads(line)["prompt"]}] for line in HELD_OUT.read_text().splitlines() if line.strip()]


def show(label: str, r) -> None:
    print(f"{label:>7}: reward {r.mean_reward:+.3f}  words {r.mean_words:5.1f}  ended by itself {r.stopped:4.0%}  "
          f"KL {r.kl_bits:.3f} bits/token", flush=True)  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--threads", type=int, default=1, help="torch threads, here and in the run (default 1: the run's "
                    "sampling then repeats exactly, and a machine shared with other work is not oversubscribed)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the run's folder here (default: a temporary one)")
    ap.add_argument("--show", action="store_true", help="print every held-out answer before and after")
    ap.add_argument("extra", nargs="*", help="more 'chatcli finetune rl' flags, after --")
    a = ap.parse_args()
    start = time.perf_counter()

    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from chatcli.engine.loader import load_engine
    from chatcli_finetune.rl.evaluate import held_out
    from chatcli_finetune.rl.graders import Grader, parse_grader
    from chatcli_finetune.rl.args import RLArgs

    max_new = RLArgs(kind="rl", data="", out="").max_new_tokens
    for k, w in enumerate(a.extra):  # the run's own budget, when given
        if w == "--max-new-tokens":
            max_new = int(a.extra[k + 1])
    engine = load_engine(a.model, device="cpu")
    grader = Grader(GRADER, fn=parse_grader(GRADER).fn)
    prompts = held_out_prompts()
    before = held_out(engine, grader, prompts, max_new, nullcontext)
    show("before", before)

    out = a.keep or Path(tempfile.mkdtemp(prefix="rl_max_words_")) / "run"
    cmd = [sys.executable, "-m", "chatcli", "finetune", "rl", str(PROMPTS), "--reward", GRADER, "--out", str(out),
           "--val-split", "0", "--json", "--overwrite", "--model", a.model, *a.extra]  # fmt: skip
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    print("$", " ".join(cmd[2:]), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    train_s = time.perf_counter() - t0
    events = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    for e in events:
        if e.get("event") == "defaults":  # the settings the run used
            print("\n".join(e["lines"]))
    steps = [m for m in events if m.get("event") == "step"]
    if proc.returncode != 0:
        print(proc.stderr[-2000:])
        return proc.returncode
    for m in steps:
        print(f"  step {m['step']:>3}: reward {m['reward']:+.3f} (group spread {m['reward_std']:.2f})  "
              f"loss {m['loss']:+.4f}  KL {m['kl']:.4f} bits  answer tokens {m['answer_tokens']:.0f}  "
              f"ended {m['stopped']:.0%}")  # fmt: skip
    print(f"training: {len(steps)} steps in {train_s:.0f} s", flush=True)

    engine.adapters.load(out, name="rl")
    after = held_out(engine, grader, prompts, max_new, lambda: engine.adapters.disabled(["rl"]))
    show("after", after)
    if a.show:
        for p, x, y in zip(prompts, before.answers, after.answers):
            print(f"- {p[-1]['content']}\n    before: {' '.join(x.split())}\n    after:  {' '.join(y.split())}")
    total = time.perf_counter() - start
    ok = after.mean_reward > before.mean_reward and after.kl_bits < 1.0 and total < GOAL_S
    print(f"total wall time {total:.0f} s (goal: < {GOAL_S} s); reward {before.mean_reward:+.3f} -> "
          f"{after.mean_reward:+.3f}, KL {after.kl_bits:.3f} bits/token (goal: < 1): {'met' if ok else 'NOT met'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
