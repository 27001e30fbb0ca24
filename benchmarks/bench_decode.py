"""Decode speed of chatcli's engine next to transformers' ``generate`` on the same checkpoint.

    .venv/bin/python benchmarks/bench_decode.py [--model smollm2-135m-instruct] [--tokens 128] [--threads N]

Both run greedy decoding from the same chat prompt, with a KV cache, in the same
process and on the same threads, in float32 and bfloat16; each configuration is
run ``--repeats`` times and the best run is reported (the machines are shared and
noisy; the best run is the least disturbed). Numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import time

import torch


def bench_chatcli(path: str, dtype: str, prompt: str, tokens: int) -> tuple[float, float, int]:
    import chatcli
    from chatcli.engine.events import Done

    model = chatcli.load_model(path, dtype=dtype, device="cpu")
    done = None
    for event in chatcli.api.events(model, prompt, temperature=0, max_tokens=tokens, stop=()):
        if isinstance(event, Done):
            done = event
    # A fresh generator each time: no prefix reuse between runs, like transformers.
    return done.tokens_per_s or 0.0, done.ttft_s or 0.0, done.completion_tokens


def bench_transformers(path: str, dtype: str, prompt: str, tokens: int) -> tuple[float, float, int]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    kwargs = dict(do_sample=False, eos_token_id=None, pad_token_id=tok.eos_token_id)  # no early stop
    with torch.inference_mode():
        t0 = time.perf_counter()
        model.generate(**ids, max_new_tokens=1, min_new_tokens=1, **kwargs)
        ttft = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = model.generate(**ids, max_new_tokens=tokens, min_new_tokens=tokens, **kwargs)
        total = time.perf_counter() - t0
    n = out.shape[1] - ids["input_ids"].shape[1]
    return (n - 1) / max(total - ttft, 1e-9), ttft, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from chatcli.engine.hub import resolve_model

    path = str(resolve_model(args.model))
    prompt = "Write a long story about a lighthouse keeper who collects sea glass."
    print(f"model {args.model} ({path}), {args.tokens} new tokens, greedy, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, best of {args.repeats}")
    print(f"{'dtype':10} {'engine':14} {'decode tok/s':>13} {'ttft s':>8} {'tokens':>7}")
    for dtype in args.dtypes.split(","):
        for name, fn in (("chatcli", bench_chatcli), ("transformers", bench_transformers)):
            runs = [fn(path, dtype, prompt, args.tokens) for _ in range(args.repeats)]
            rate, ttft, n = max(runs)
            print(f"{dtype:10} {name:14} {rate:13.1f} {min(r[1] for r in runs):8.3f} {n:7d}", flush=True)


if __name__ == "__main__":
    main()
