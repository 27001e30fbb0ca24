"""The llama.cpp baseline (llama-cpp-python, optional): the default model's Q4_1 GGUF.

Same token ids as the other systems (chatcli's tokenizer; the GGUF carries the same
vocabulary). ``Llama.generate`` is used directly: it evaluates the prompt, reuses the
longest prefix already in its context (llama.cpp's own prefix reuse), and yields
sampled tokens without stopping at end-of-sequence, so exactly N tokens are timed.
No batched candidates or PEFT adapters here: those groups are not run for it.
"""

from __future__ import annotations

import os
import time

from chatcli.bench.chatcli_worker import conversation, decode_ids, prefill_ids
from chatcli.bench.spec import BenchSpec
from chatcli.bench.stats import decode_rates, prefill_rates

GROUPS = ("prefill", "decode", "turns")


def run(spec: BenchSpec, group: str) -> dict:
    import llama_cpp

    from chatcli.engine.loader import load_prompt_renderer

    if not spec.gguf:
        raise RuntimeError("no GGUF file for llama.cpp")
    threads = spec.threads or os.cpu_count() or 1
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(model_path=spec.gguf, n_ctx=2048, n_batch=512, n_threads=threads,
                          n_threads_batch=threads, verbose=False)  # fmt: skip
    load_s = time.perf_counter() - t0
    tokenizer = load_prompt_renderer(spec.path).tokenizer
    figures, info = {"prefill": _prefill, "decode": _decode, "turns": _turns}[group](llm, tokenizer, spec)
    info.update(gguf=spec.gguf, llama_cpp=getattr(llama_cpp, "__version__", "?"), threads=threads)
    return {"figures": figures, "load_s": load_s, "info": info, "notes": []}


def _times(llm, ids: list[int], n: int, reset: bool = True) -> tuple[float, list[float]]:
    """Greedy: (start, a timestamp per generated token) for ``n`` tokens after ``ids``."""
    if reset:
        llm.reset()  # forget the context: no prefix reuse unless asked for
    stamps = []
    t0 = time.perf_counter()
    for _ in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
        stamps.append(time.perf_counter())
        if len(stamps) >= n:
            break
    return t0, stamps


def _prefill(llm, tokenizer, spec: BenchSpec):
    ids = prefill_ids(tokenizer, spec.sizes.prompt_tokens)
    times = lambda ids, n: _times(llm, ids, n)  # noqa: E731
    return {"prefill_tps": prefill_rates(times, ids, spec.repeats)}, {"prompt_tokens": len(ids)}


def _decode(llm, tokenizer, spec: BenchSpec):
    times = lambda ids, n: _times(llm, ids, n)  # noqa: E731
    return {"decode_tps": decode_rates(times, decode_ids(tokenizer), spec.sizes.decode_tokens, spec.repeats)}, {}


def _turns(llm, tokenizer, spec: BenchSpec):
    turns = conversation(spec)
    first, last = [], []
    for i in range(1 + spec.repeats):  # the first conversation is the warm-up
        llm.reset()
        messages: list[dict] = []
        ttfts = []
        for text in turns:
            messages.append({"role": "user", "content": text})
            t0 = time.perf_counter()
            ids = tokenizer.encode_chat(messages)
            answer = []
            for tok in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
                if not answer:
                    ttfts.append(time.perf_counter() - t0)
                if tok in tokenizer.eos_ids:
                    break
                answer.append(tok)
                if len(answer) >= spec.sizes.turn_answer_tokens:
                    break
            messages.append({"role": "assistant", "content": tokenizer.decode(answer)})
        if i:
            first.append(ttfts[0])
            last.append(ttfts[-1])
    return {"ttft_first_s": first, "ttft_last_s": last}, {"turns": len(turns)}
