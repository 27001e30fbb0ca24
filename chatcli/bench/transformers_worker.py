"""The transformers baselines of each figure group: the same checkpoint, dtype, threads and token ids.

Two ways a transformers user decodes, two systems in the bench:

* ``transformers`` (:func:`run`): ``AutoModelForCausalLM.from_pretrained`` on chatcli's
  checkpoint directory and ``generate`` with its own KV cache. Token ids come from
  chatcli's tokenizer (identical to the checkpoint's, so both systems get the same
  input), except on the turns, where transformers renders its own chat template each
  turn and re-prefills the whole history, as it does. Candidates: one
  ``num_return_sequences=N`` sampling call against N calls. Adapters: PEFT
  (``PeftModel.from_pretrained``, unmerged, then ``merge_and_unload``).
* ``transformers-loop`` (:func:`run_loop`): the plain KV-cache greedy loop with none of
  ``generate``'s per-step machinery (logits processors, stopping criteria, streamer),
  the fair baseline for decode speed: one forward of the prompt (``logits_to_keep=1``),
  then ``model(next, past_key_values=cache)`` (``cache=`` in transformers 5) and ``argmax`` per token, under
  ``torch.inference_mode()``, SDPA attention. Prefill, decode and turns; the turns keep
  the cache between turns and feed only what the history adds (``DynamicCache.crop`` to
  the common prefix), as chatcli's own prefix reuse does.
"""

from __future__ import annotations

import time

from chatcli.bench.chatcli_worker import conversation, decode_ids, prefill_ids
from chatcli.bench.spec import BenchSpec
from chatcli.bench.stats import decode_rates, prefill_rates


def run(spec: BenchSpec, group: str) -> dict:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from chatcli.engine.loader import load_prompt_renderer

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(spec.path, dtype=getattr(torch, spec.dtype)).eval()
    load_s = time.perf_counter() - t0
    tokenizer = load_prompt_renderer(spec.path).tokenizer
    fn = {"prefill": _prefill, "decode": _decode, "turns": _turns, "candidates": _candidates,
          "adapters": _adapters}[group]  # fmt: skip
    with torch.inference_mode():
        figures, info = fn(model, tokenizer, spec)
    info["transformers"] = transformers.__version__
    return {"figures": figures, "load_s": load_s, "info": info, "notes": []}


# ---------------------------------------------------------------- the plain KV-cache loop


def run_loop(spec: BenchSpec, group: str) -> dict:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from chatcli.engine.loader import load_prompt_renderer

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(spec.path, dtype=getattr(torch, spec.dtype),
                                                 attn_implementation="sdpa").eval()  # fmt: skip
    load_s = time.perf_counter() - t0
    tokenizer = load_prompt_renderer(spec.path).tokenizer
    fn = {"prefill": _loop_prefill, "decode": _loop_decode, "turns": _loop_turns}[group]
    with torch.inference_mode():
        figures, info = fn(model, tokenizer, spec)
    info.update(transformers=transformers.__version__, attention=model.config._attn_implementation)
    return {"figures": figures, "load_s": load_s, "info": info, "notes": []}


class _Loop:
    """One sequence's greedy loop: the ids whose keys/values the cache holds, and the cache."""

    def __init__(self, model) -> None:
        import inspect

        from transformers import DynamicCache

        self.model = model
        self.cache = DynamicCache()
        self.ids: list[int] = []  # fed so far, position by position
        # transformers 5 renames past_key_values to cache (the old name warns, then goes away)
        self.cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def feed(self, ids: list[int]) -> int:
        """Run ``ids`` after what the cache holds; the greedy next token."""
        import torch

        x = torch.tensor([ids], dtype=torch.long)
        logits = self.model(input_ids=x, use_cache=True, logits_to_keep=1, **{self.cache_arg: self.cache}).logits
        self.ids += ids
        return int(logits[0, -1].argmax())

    def reuse(self, ids: list[int]) -> list[int]:
        """Keep the cached prefix ``ids`` starts with (at least one token left to run); the rest."""
        keep = 0
        for a, b in zip(self.ids, ids[:-1]):
            if a != b:
                break
            keep += 1
        if keep < len(self.ids):
            self.cache.crop(keep - len(self.ids))  # negative: the tokens to remove (transformers 4 and 5)
            del self.ids[keep:]
        return ids[keep:]


def _loop_times(model, ids: list[int], n: int) -> tuple[float, list[float]]:
    """(start, a timestamp per token) for ``n`` greedy tokens after ``ids`` from an empty cache."""
    loop = _Loop(model)
    stamps = []
    t0 = time.perf_counter()
    token = loop.feed(ids)
    stamps.append(time.perf_counter())
    while len(stamps) < n:
        token = loop.feed([token])
        stamps.append(time.perf_counter())
    return t0, stamps


def _loop_prefill(model, tokenizer, spec: BenchSpec):
    ids = prefill_ids(tokenizer, spec.sizes.prompt_tokens)
    times = lambda ids, n: _loop_times(model, ids, n)  # noqa: E731
    return {"prefill_tps": prefill_rates(times, ids, spec.repeats)}, {"prompt_tokens": len(ids)}


def _loop_decode(model, tokenizer, spec: BenchSpec):
    times = lambda ids, n: _loop_times(model, ids, n)  # noqa: E731
    return {"decode_tps": decode_rates(times, decode_ids(tokenizer), spec.sizes.decode_tokens, spec.repeats)}, {}


def _loop_turns(model, tokenizer, spec: BenchSpec):
    turns = conversation(spec)
    first, last = [], []
    for i in range(1 + spec.repeats):  # the first conversation is the warm-up
        loop = _Loop(model)
        messages: list[dict] = []
        ttfts = []
        for text in turns:
            messages.append({"role": "user", "content": text})
            t0 = time.perf_counter()
            token = loop.feed(loop.reuse(tokenizer.encode_chat(messages)))
            ttfts.append(time.perf_counter() - t0)
            answer: list[int] = []
            while token not in tokenizer.eos_ids:
                answer.append(token)
                if len(answer) >= spec.sizes.turn_answer_tokens:
                    break
                token = loop.feed([token])
            messages.append({"role": "assistant", "content": tokenizer.decode(answer)})
        if i:
            first.append(ttfts[0])
            last.append(ttfts[-1])
    return {"ttft_first_s": first, "ttft_last_s": last}, {"turns": len(turns)}


class _Clock:
    """A streamer that stamps each generated token (generate's first put is the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def _generate(model, ids: list[int], n: int, **kwargs) -> tuple[float, _Clock, object]:
    """Generate exactly ``n`` tokens (end-of-sequence suppressed); (start time, clock, output)."""
    import torch

    x = torch.tensor([ids], dtype=torch.long)
    clock = _Clock()
    kwargs.setdefault("do_sample", False)
    t0 = time.perf_counter()
    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                         pad_token_id=0, streamer=clock, **kwargs)  # fmt: skip
    return t0, clock, out


def _decode_rate(model, ids: list[int], n: int) -> float:
    _, clock, _ = _generate(model, ids, n)
    t = clock.times
    if len(t) < 2 or t[-1] <= t[0]:
        raise RuntimeError(f"decoded {len(t)} tokens: too few to time")
    return (len(t) - 1) / (t[-1] - t[0])  # after the first token, as chatcli's Done.tokens_per_s


def _prefill(model, tokenizer, spec: BenchSpec):
    n = spec.sizes.prompt_tokens
    ids = prefill_ids(tokenizer, n)
    rates = []
    for i in range(1 + spec.repeats):  # the first is the warm-up
        t0, clock, _ = _generate(model, ids, 1)
        if i:
            rates.append(n / (clock.times[0] - t0))
    return {"prefill_tps": rates}, {"prompt_tokens": n}


def _decode(model, tokenizer, spec: BenchSpec):
    ids = decode_ids(tokenizer)
    _decode_rate(model, ids, min(spec.sizes.decode_tokens, 8))  # warm-up
    return {"decode_tps": [_decode_rate(model, ids, spec.sizes.decode_tokens) for _ in range(spec.repeats)]}, {}


def _conversation_ttfts(model, hf_tok, turns: tuple[str, ...], answer_tokens: int) -> tuple[list[float], int]:
    """Each turn: render the whole history with transformers' tokenizer, generate (EOS allowed)."""
    messages: list[dict] = []
    ttfts = []
    for text in turns:
        messages.append({"role": "user", "content": text})
        clock = _Clock()
        t0 = time.perf_counter()
        enc = hf_tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        out = model.generate(**enc, max_new_tokens=answer_tokens, do_sample=False, streamer=clock,
                             pad_token_id=hf_tok.pad_token_id or 0)  # fmt: skip
        end = time.perf_counter()
        ttfts.append(clock.times[0] - t0 if clock.times else end - t0)
        prompt_len = enc["input_ids"].shape[1]
        answer = hf_tok.decode(out[0, prompt_len:], skip_special_tokens=True)
        messages.append({"role": "assistant", "content": answer})
    return ttfts, prompt_len


def _turns(model, tokenizer, spec: BenchSpec):
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(spec.path)
    turns = conversation(spec)
    _conversation_ttfts(model, hf_tok, turns[:2], spec.sizes.turn_answer_tokens)  # warm-up
    first, last = [], []
    for _ in range(spec.repeats):
        ttfts, last_prompt = _conversation_ttfts(model, hf_tok, turns, spec.sizes.turn_answer_tokens)
        first.append(ttfts[0])
        last.append(ttfts[-1])
    return {"ttft_first_s": first, "ttft_last_s": last}, {"turns": len(turns), "last_prompt_tokens": last_prompt}


def _candidates(model, tokenizer, spec: BenchSpec):
    import torch

    n, t = spec.sizes.candidates, spec.sizes.candidate_tokens
    ids = decode_ids(tokenizer)
    sample = dict(do_sample=True, temperature=0.8, top_k=0, top_p=1.0)  # as chatcli's candidates

    def batched(t: int = t) -> float:
        torch.manual_seed(1)
        x = torch.tensor([ids], dtype=torch.long)
        t0 = time.perf_counter()
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), num_return_sequences=n,
                             max_new_tokens=t, min_new_tokens=t, pad_token_id=0, **sample)  # fmt: skip
        return (out.shape[0] * (out.shape[1] - len(ids))) / (time.perf_counter() - t0)

    def sequential() -> float:
        tokens, t0 = 0, time.perf_counter()
        for i in range(n):
            torch.manual_seed(1 + i)
            _, _, out = _generate(model, ids, t, **sample)
            tokens += out.shape[1] - len(ids)
        return tokens / (time.perf_counter() - t0)

    batched(2)  # warm-up: batch shapes
    b, s = [], []
    for _ in range(spec.repeats):
        b.append(batched())
        s.append(sequential())
    return {"batch_tps": b, "sequential_tps": s}, {"n": n, "tokens_each": t}


def _adapters(model, tokenizer, spec: BenchSpec):
    from peft import PeftModel

    if not spec.adapter_dir:
        raise RuntimeError("no adapter folder was given to the adapters group")
    ids, n = decode_ids(tokenizer), spec.sizes.adapter_tokens
    original = {k: v.clone() for k, v in model.state_dict().items()}  # merge_and_unload changes the weights
    loads = []
    for i in range(1 + spec.sizes.adapter_loads):  # the first load is the warm-up
        t0 = time.perf_counter()
        peft_model = PeftModel.from_pretrained(model, spec.adapter_dir)
        if i:
            loads.append((time.perf_counter() - t0) * 1e3)
        model = peft_model.unload()  # the original modules back, weights untouched
    _decode_rate(model, ids, min(n, 8))  # warm-up
    none, unmerged, merged = [], [], []
    for _ in range(spec.repeats):
        none.append(_decode_rate(model, ids, n))
        peft_model = PeftModel.from_pretrained(model, spec.adapter_dir)
        unmerged.append(_decode_rate(peft_model, ids, n))
        model = peft_model.merge_and_unload()
        merged.append(_decode_rate(model, ids, n))
        model.load_state_dict(original)
    figures = {"adapter_load_ms": loads, "adapter_none_tps": none, "adapter_unmerged_tps": unmerged,
               "adapter_merged_tps": merged}  # fmt: skip
    import peft

    return figures, {"peft": peft.__version__}
