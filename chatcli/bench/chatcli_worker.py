"""The chatcli side of each figure group, through the public API and the engine's objects.

Everything goes through what a front end uses: :func:`chatcli.api.load_model`,
``LoadedModel.chat`` (turns), ``LoadedModel.generator`` (prefill, decode, batched
candidates) and ``LoadedModel.adapters`` (LoRA). Times are wall-clock from the call
to the event that ends the measurement. Each group: one warm-up, then
``spec.repeats`` measured runs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable

from chatcli.bench import prompts
from chatcli.bench.spec import BenchSpec


def run(spec: BenchSpec, group: str) -> dict:
    from chatcli.api import load_model

    kwargs = {"quantize": spec.quantize} if spec.quantize else {}
    t0 = time.perf_counter()
    # As a person's commands decode: float32, int8, int4 and bfloat16 through the compiled step (its package built by the group's
    # untimed warm-up when missing, where a person's first chat builds it in the background).
    lm = load_model(spec.path, dtype=spec.dtype, device="cpu", compile=spec.compiled, **kwargs)
    load_s = time.perf_counter() - t0
    fn = {"prefill": _prefill, "decode": _decode, "turns": _turns, "candidates": _candidates,
          "adapters": _adapters}[group]  # fmt: skip
    figures, info = fn(lm, spec)
    kernels, note = _kernels(lm)
    notes = [note]
    if spec.compiled and group in ("decode", "turns"):
        notes.append(_step_note(lm))
    return {"figures": figures, "load_s": load_s, "info": {**info, **kernels}, "notes": notes}


def _step_note(lm) -> str:
    """Which decode step the figures ran: compiled (and why not, where it was asked) or eager."""
    decoder = lm.generator.compiled
    if decoder.reason is None and decoder.failed is None:
        return "chatcli decode: the compiled step (chatcli's default once built; --eager for the eager one)"
    return f"chatcli decode: the eager step ({decoder.failed or decoder.reason})"


def _kernels(lm) -> tuple[dict, str]:
    """The compute paths the model ran (chatcli.engine.calibration): for the report's info, and its note."""
    from chatcli.engine.calibration.auto import auto_enabled
    from chatcli.engine.calibration.table import kernel_note

    choices = lm.model.kernel_choices
    return {"kernels": choices.to_json()}, kernel_note(choices, lm.calibration, auto_enabled())


# ---------------------------------------------------------------- helpers


def _greedy(n: int):
    from chatcli.engine.params import SamplingParams

    return SamplingParams(temperature=0, max_tokens=n, top_n=5)


def _timed(events: Iterable) -> tuple[float | None, float, list]:
    """Consume an event stream: (seconds to the first Step, seconds to the end, the Done events)."""
    from chatcli.engine.events import Done, Step

    t0 = time.perf_counter()
    first, dones = None, []
    for ev in events:
        if first is None and isinstance(ev, Step):
            first = time.perf_counter() - t0
        elif isinstance(ev, Done):
            if ev.finish_reason == "error":
                raise RuntimeError(ev.error or "generation failed")
            dones.append(ev)
    return first, time.perf_counter() - t0, dones


def prefill_ids(tokenizer, n: int) -> list[int]:
    """Exactly ``n`` plain-text token ids (the prefill prompt every system gets)."""
    ids: list[int] = []
    text = prompts.PREFILL_TEXT
    while len(ids) < n:
        ids = tokenizer.encode(text)
        text += prompts.PREFILL_TEXT
    return ids[:n]


def decode_ids(tokenizer) -> list[int]:
    return tokenizer.encode_chat([{"role": "user", "content": prompts.DECODE_MESSAGE}])


def conversation(spec: BenchSpec) -> tuple[str, ...]:
    turns = prompts.SHORT_CONVERSATION if spec.sizes.short_turns else prompts.CONVERSATION
    return turns[: spec.sizes.turns]


def _decode_rate(gen, ids: list[int], n: int) -> float:
    """Greedy decode of ``n`` tokens from a fresh cache; tokens/s after the first token."""
    gen.reset()
    _, _, (done,) = _timed(gen.stream(ids, _greedy(n), eos_ids=()))
    if not done.tokens_per_s:
        raise RuntimeError(f"decoded {done.completion_tokens} tokens: too few to time")
    return done.tokens_per_s


def _bytes_read_per_token(lm) -> dict:
    """Weight bytes a decode step reads (each storage once; an untied embedding reads one row)."""
    import torch

    model = lm.model
    seen: dict[int, int] = {}
    tensors = list(model.state_dict().values())
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    weights = sum(seen.values())
    # From the state dict, not .weight: a lookup from the int8 head's rows (Int8Embedding) has no
    # table of its own, and reading its .weight would dequantise one (+113 MB at this worker's peak).
    emb = model.state_dict().get("model.embed_tokens.weight")
    head = getattr(model, "lm_head", None)
    head_storages = {t.untyped_storage().data_ptr() for t in head.state_dict().values()} if head is not None else set()
    emb_storage = emb.untyped_storage().data_ptr() if emb is not None else None
    # Untied, or the head has its own (int8) copy: only the looked-up row is read. (An embedding
    # kept outside the state dict was not counted above: nothing to take off.)
    if emb is not None and emb_storage in seen and emb_storage not in head_storages:
        weights -= emb.nbytes - emb[0].nbytes
    cfg = model.config
    elem = torch.empty((), dtype=model.dtype).element_size()  # the KV cache is kept in the model dtype
    kv_per_position = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * elem
    return {"weight_bytes": weights, "kv_bytes_per_position": kv_per_position}


# ---------------------------------------------------------------- groups


def _prefill(lm, spec: BenchSpec):
    gen, n = lm.generator, spec.sizes.prompt_tokens
    ids = prefill_ids(lm.tokenizer, n)
    rates = []
    for i in range(1 + spec.repeats):  # the first is the warm-up (same size: it sets up the kernels)
        gen.reset()
        first, _, _ = _timed(gen.stream(ids, _greedy(1), eos_ids=()))
        if i:
            rates.append(n / first)
    return {"prefill_tps": rates}, {"prompt_tokens": n}


def _decode(lm, spec: BenchSpec):
    gen, n = lm.generator, spec.sizes.decode_tokens
    ids = decode_ids(lm.tokenizer)
    _decode_rate(gen, ids, min(n, 8))  # warm-up
    rates = [_decode_rate(gen, ids, n) for _ in range(spec.repeats)]
    info = {"prompt_tokens": len(ids), **_bytes_read_per_token(lm),
            "mean_context": len(ids) + n / 2}  # fmt: skip
    compiled = gen.compiled
    if compiled is not None and compiled.reason is None and compiled.failed is None:
        # One program: its products and everything around them are not separate ops a profiler can
        # tell apart (the share read ~1). `--eager` measures the eager step's split.
        why = "the compiled step runs as one program (--eager: the eager step's split)"
        return {"decode_tps": rates}, {**info, "skipped": {"decode_outside_ms": why}}
    share, profiled_ms = _outside_share(gen, ids, n)
    outside = [1e3 / r * share for r in rates]
    step_ms = statistics.median(1e3 / r for r in rates)
    return {"decode_tps": rates, "decode_outside_ms": outside}, {
        **info, "outside_share": share, "products_ms_per_token": step_ms * (1 - share),
        "profiled_ms_per_token": profiled_ms}  # fmt: skip


# The kernels of a decode step's matrix products (float, oneDNN bf16, int8, int4, the int8 head's
# exact recompute): everything else a step does counts as "outside the matrix products".
PRODUCT_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_weight_int4pack_mm_for_cpu", "aten::_weight_int8pack_mm",
               "mkldnn::_linear_pointwise", "aten::_weight_int4pack_mm")  # fmt: skip


def _outside_share(gen, ids: list[int], n: int) -> tuple[float, float]:
    """(the share of a decode step's time spent outside the matrix-product kernels, the profiled
    milliseconds per token): one greedy decode of ``n`` tokens under torch's profiler, the steps
    after the first token timed as one window (:func:`outside_share`).

    Both halves of the share come from the same steps: the window's wall time and the kernels'
    time inside it. The figure "per-token time outside the matrix products" is this share of the
    unprofiled per-token time (1 / decode tok/s), so it lies between 0 and that time by
    construction. (Subtracting the profiled kernels' time from the unprofiled step time, as before,
    mixed two runs: a profiled run whose kernels ran slower than a whole unprofiled step read
    -11.8 ms for bfloat16.) The profiler's own cost per recorded op (~1-10 us on a loaded 2-core
    VM, and a decode step has ~1,700 ops) lands outside the kernels, so the share leans high:
    ``profiled_ms_per_token`` beside 1 / decode tok/s shows how much the profiler slowed the steps.
    Outside: Python, casts, norms, RoPE, cache writes, attention, sampling and the
    probabilities/entropy/top tokens every step reports."""
    from torch.profiler import ProfilerActivity, profile, record_function

    from chatcli.engine.events import Step

    gen.reset()
    steps = 0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        events = gen.stream(ids, _greedy(n), eos_ids=())
        next(ev for ev in events if isinstance(ev, Step))  # prefill and the first token: not decode
        with record_function("chatcli-decode"):
            for ev in events:
                steps += isinstance(ev, Step)
    recorded = prof.events()
    window = next((e for e in recorded if e.name == "chatcli-decode"), None)
    if window is None or not steps:
        raise RuntimeError("the profiled decode produced no steps to time")
    return outside_share(recorded, window), (window.time_range.end - window.time_range.start) / 1e3 / steps


def outside_share(events: Iterable, window) -> float:
    """1 - (time inside :data:`PRODUCT_OPS` events) / (``window``'s time), in [0, 1] by construction.

    ``events`` and ``window``: profiler events (``name``, ``thread``, ``time_range.start/.end``).
    The product events on the window's thread are clipped to the window and merged into disjoint
    intervals before their lengths are summed, so a kernel nested in another (``aten::mm`` under
    ``aten::addmm`` in some builds) or an event reaching past the window is never counted twice or
    outside it: the sum cannot exceed the window, whatever the profiler recorded."""
    lo, hi = window.time_range.start, window.time_range.end
    if hi <= lo:
        raise RuntimeError("the profiled decode window has no duration")
    spans = sorted((max(e.time_range.start, lo), min(e.time_range.end, hi)) for e in events
                   if e.name in PRODUCT_OPS and e.thread == window.thread)  # fmt: skip
    inside, reach = 0, lo
    for start, end in spans:
        start = max(start, reach)  # the part not yet counted
        if end > start:
            inside += end - start
            reach = end
    return 1 - inside / (hi - lo)


def _conversation_ttfts(lm, turns: tuple[str, ...], answer_tokens: int) -> tuple[list[float], int]:
    """One conversation from a fresh cache: the time to first token of every turn, and the last prompt's length."""
    lm.generator.reset()
    messages: list[dict] = []
    ttfts = []
    for text in turns:
        messages.append({"role": "user", "content": text})
        first, wall, (done,) = _timed(lm.chat(messages, _greedy(answer_tokens)))
        ttfts.append(first if first is not None else wall)  # an answer that is only EOS: its end
        messages.append({"role": "assistant", "content": done.text})
    return ttfts, done.prompt_tokens


def _turns(lm, spec: BenchSpec):
    turns = conversation(spec)
    _conversation_ttfts(lm, turns[:2], spec.sizes.turn_answer_tokens)  # warm-up
    first, last = [], []
    for _ in range(spec.repeats):
        ttfts, last_prompt = _conversation_ttfts(lm, turns, spec.sizes.turn_answer_tokens)
        first.append(ttfts[0])
        last.append(ttfts[-1])
    return {"ttft_first_s": first, "ttft_last_s": last}, {"turns": len(turns), "last_prompt_tokens": last_prompt}


def _candidates(lm, spec: BenchSpec):
    from chatcli.engine.params import SamplingParams

    gen, n, t = lm.generator, spec.sizes.candidates, spec.sizes.candidate_tokens
    ids = decode_ids(lm.tokenizer)
    params = SamplingParams(temperature=0.8, max_tokens=t, seed=1, top_n=5)  # /rank's temperature

    def batched() -> float:
        _, wall, dones = _timed(gen.stream_batch(ids, params, n, eos_ids=()))
        return sum(d.completion_tokens for d in dones) / wall

    def sequential() -> float:
        tokens, wall = 0, 0.0
        for i in range(n):
            _, w, (done,) = _timed(gen.stream(ids, params.with_(seed=1 + i), eos_ids=()))
            tokens, wall = tokens + done.completion_tokens, wall + w
        return tokens / wall

    gen.reset()
    for _ in gen.stream_batch(ids, params.with_(max_tokens=2), n, eos_ids=()):  # warm-up: batch shapes
        pass
    b, s = [], []
    for _ in range(spec.repeats):  # interleaved, so machine load hits both alike
        b.append(batched())
        s.append(sequential())
    return {"batch_tps": b, "sequential_tps": s}, {"n": n, "tokens_each": t}


def _adapters(lm, spec: BenchSpec):
    if not spec.adapter_dir:
        raise RuntimeError("no adapter folder was given to the adapters group")
    gen, mgr, n = lm.generator, lm.adapters, spec.sizes.adapter_tokens
    ids = decode_ids(lm.tokenizer)
    loads = []
    for i in range(1 + spec.sizes.adapter_loads):  # the first load is the warm-up
        t0 = time.perf_counter()
        info = mgr.load(spec.adapter_dir, name="bench")
        if i:
            loads.append((time.perf_counter() - t0) * 1e3)
        mgr.unload("bench")
    _decode_rate(gen, ids, min(n, 8))  # warm-up
    none, unmerged, merged = [], [], []
    can_merge = not spec.quantize  # int8 weights take no merge (the manager refuses it)
    for _ in range(spec.repeats):  # interleaved rounds: none, unmerged, merged
        none.append(_decode_rate(gen, ids, n))
        mgr.load(spec.adapter_dir, name="bench")
        unmerged.append(_decode_rate(gen, ids, n))
        if can_merge:
            mgr.merge("bench")
            merged.append(_decode_rate(gen, ids, n))
        mgr.unload("bench")
    figures = {"adapter_load_ms": loads, "adapter_none_tps": none, "adapter_unmerged_tps": unmerged}
    info = {"adapter_modules": info.modules, "adapter_params": info.params}
    if can_merge:
        figures["adapter_merged_tps"] = merged
    else:
        info["skipped"] = {"adapter_merged_tps": f"--quantize {spec.quantize}: no merge into quantised weights"}
    return figures, info
