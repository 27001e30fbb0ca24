"""Shared by ``dpo_visible_change.py`` and ``sft_visible_change.py``: run the CLI, measure with PEFT, print.

Not a benchmark by itself. :func:`run_cli` times ``chatcli finetune KIND DATA --out DIR``
as a person would run it (a fresh process: imports, model load, training and the "what
changed" report all counted). :func:`measure_peft` loads the trained adapter the way
another tool would, with ``peft.PeftModel.from_pretrained`` on transformers' float32 copy
of the same cached checkpoint, and compares it with the same model with the adapter
disabled on held-out questions rendered through the model's chat template with its
default system prompt (a user turn alone: SmolLM2's template adds its system prompt):

* the mean over questions of KL(adapter ‖ base) of the first answer token, in bits;
* the mean probability of the phrase's first token as the first answer token, base and adapter;
* the share of greedy answers (24 tokens) that open with the phrase, base and adapter.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

MODEL = "smollm2-135m-instruct"
# The measuring half (transformers, in this process) lets OpenMP threads sleep, as `chatcli finetune`
# does: spinning ones made it many times slower on the busy shared machine. The timed command gets
# the environment the person started with.
_PERSON_OMP = os.environ.get("OMP_WAIT_POLICY")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Questions neither data set holds: both benchmarks measure on these.
HELD_OUT = [
    "Why is the sky blue?",
    "How do magnets work?",
    "What is the best way to learn a new language?",
    "Why do we dream?",
    "How does a refrigerator keep food cold?",
    "What is inflation in economics?",
    "How do I make my houseplants grow better?",
    "Why do onions make us cry?",
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def run_cli(kind: str, data: Path, out: Path) -> float:
    """Run ``chatcli finetune KIND DATA --out OUT`` (no tuning flags); its output passes through. Seconds."""
    exe = Path(sys.executable).with_name("chatcli")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "chatcli"]
    cmd += ["finetune", kind, str(data), "--out", str(out)]
    print("$ " + " ".join(cmd), flush=True)
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if _PERSON_OMP is not None:
        env["OMP_WAIT_POLICY"] = _PERSON_OMP
    start = time.perf_counter()
    rc = subprocess.run(cmd, env=env).returncode
    seconds = time.perf_counter() - start
    if rc != 0:
        raise SystemExit(f"chatcli finetune {kind} failed (exit {rc})")
    return seconds


def checkpoint_dir() -> Path:
    from chatcli.hub.catalog import resolve_model

    return Path(resolve_model(MODEL))


def measure_peft(adapter: Path, questions: list[str], phrase: str, answer_tokens: int = 24) -> dict:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = checkpoint_dir()
    tok = AutoTokenizer.from_pretrained(path)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), str(adapter)).eval()
    first_id = tok.encode(phrase, add_special_tokens=False)[0]
    kls, p_base, p_adapter, greedy = [], [], [], []
    with torch.no_grad():
        for q in questions:
            text = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
            ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
            lp_a = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), -1)
            with model.disable_adapter():
                lp_b = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), -1)
            kls.append(float((lp_a.exp() * (lp_a - lp_b)).sum()) / math.log(2))
            p_adapter.append(float(lp_a[first_id].exp()))
            p_base.append(float(lp_b[first_id].exp()))
            gen = dict(max_new_tokens=answer_tokens, do_sample=False, pad_token_id=tok.eos_token_id)
            out_a = tok.decode(model.generate(input_ids=ids, **gen)[0, ids.shape[1] :], skip_special_tokens=True)
            with model.disable_adapter():
                out_b = tok.decode(model.generate(input_ids=ids, **gen)[0, ids.shape[1] :], skip_special_tokens=True)
            greedy.append((q, out_b.strip(), out_a.strip()))
    n = len(questions)
    return {
        "first_token_kl_bits": sum(kls) / n,
        "p_phrase_base": sum(p_base) / n,
        "p_phrase_adapter": sum(p_adapter) / n,
        "opens_base": sum(b.startswith(phrase) for _, b, _ in greedy) / n,
        "opens_adapter": sum(a.startswith(phrase) for _, _, a in greedy) / n,
        "greedy": greedy,
    }


def report(kind: str, seconds: float, m: dict, out: Path, time_target: float | None, kl_target: float) -> bool:
    """Print each figure beside its target; True when every target is met."""
    ratio = m["p_phrase_adapter"] / max(m["p_phrase_base"], 1e-12)
    checks = [
        ("whole command (load, train, report)", f"{seconds:.0f} s", f"<= {time_target:.0f} s" if time_target else "(reported)",
         time_target is None or seconds <= time_target),
        ("first-token KL(adapter || base), held out", f"{m['first_token_kl_bits']:.3f} bits", f">= {kl_target} bits",
         m["first_token_kl_bits"] >= kl_target),
        ("p(phrase's first token), base -> adapter", f"{m['p_phrase_base']:.2g} -> {m['p_phrase_adapter']:.2g} (x{ratio:.1f})",
         "> x2", ratio > 2.0),
        ("greedy answers opening with the phrase", f"{m['opens_base']:.0%} -> {m['opens_adapter']:.0%}", "(reported)", True),
    ]  # fmt: skip
    print(f"\n{kind}: figure | measured | target")
    for name, value, target, ok in checks:
        print(f"  {name:<44} {value:<32} {target:<12} {'ok' if ok else 'MISSED'}")
    wc = out / "what_changed.json"
    if wc.is_file():
        from chatcli_finetune.what_changed import lines

        print("  the run's own report (DIR/what_changed.json):")
        for line in lines(json.loads(wc.read_text())):
            print(f"    {line}")
    print("\ngreedy answers, base -> adapter:")
    for q, b, a in m["greedy"][:4]:
        print(f"  {q}\n    base:    {b!r}\n    adapter: {a!r}")
    return all(ok for *_, ok in checks)


def fresh(out: Path) -> Path:
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out
