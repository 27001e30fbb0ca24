"""``chatcli bench --compile``: the ahead-of-time compiled decode step beside the eager one, in one run.

The runner starts two chatcli workers on one fresh, empty cache (``TORCHINDUCTOR_CACHE_DIR`` in their
environment, a temporary folder; the step's packages live under it): the first builds the package from
nothing (the **cold** start: a new machine, a new torch, a cleared cache), the second finds it on disk
and loads it (the **warm** start: every later process). Each worker reports the seconds its first
compiled answer spent building (:attr:`~chatcli.model.compiled.step.CompiledDecoder.compile_s`) or
loading (``load_s``);
the warm worker then decodes the same greedy answer eagerly and compiled, interleaved (machine load
hits both alike), and compares them: whether the greedy ids are identical and the largest
``|logit|`` difference over the answer (:func:`measure`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

from chatcli.bench.spec import BenchSpec

CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def run_group(spec: BenchSpec, run_worker: Callable[..., dict]) -> tuple[dict, dict]:
    """The cold and the warm worker's results (``run_worker`` is the runner's, given ``env=``)."""
    with tempfile.TemporaryDirectory(prefix="chatcli-bench-inductor-") as cache:
        env = {**os.environ, CACHE_ENV: cache}
        cold = run_worker("chatcli", "compile", spec.with_(repeats=0), env=env)  # the compile only
        warm = run_worker("chatcli", "compile", spec, env=env)
    return cold, warm


def merge(cold: dict, warm: dict) -> dict:
    """One result for the collector: the warm worker's figures, with both compile times."""
    if "error" in cold:
        return cold
    if "error" in warm:
        return warm
    figures = dict(warm["figures"])
    for key, result in (("compile_cold_s", cold), ("compile_warm_s", warm)):
        if "compile_s" in result["figures"]:
            figures[key] = result["figures"]["compile_s"]
    figures.pop("compile_s", None)
    info = warm.get("info", {})
    notes = list(warm.get("notes", []))
    if "not_compiled" in info:  # the product's own answer on this model: eager, with the reason
        notes.append(f"--compile: {info['not_compiled']}; chatcli decodes this model eagerly with --compile")
    if "greedy_identical" in info:
        diff = info["max_logit_diff"]
        logits = "logits bit for bit the same" if diff == 0 else f"largest |logit| difference {diff:.2g}"
        notes.append(f"--compile: greedy answer {'identical to' if info['greedy_identical'] else 'different from'} "
                     f"the eager step's over {info['greedy_tokens']} tokens; {logits} (both steps fed the eager answer)")
    return {**warm, "figures": figures, "notes": notes}


def run(spec: BenchSpec, group: str) -> dict:
    """The worker's entry (``python -m chatcli.bench.worker chatcli compile SPEC``): load as the chatcli
    worker does, then :func:`measure`."""
    import time

    from chatcli.api import load_model
    from chatcli.bench.chatcli_worker import _kernels

    kwargs = {"quantize": spec.quantize} if spec.quantize else {}
    t0 = time.perf_counter()
    lm = load_model(spec.path, dtype=spec.dtype, device="cpu", **kwargs)
    load_s = time.perf_counter() - t0
    figures, info = measure(lm, spec)
    kernels, note = _kernels(lm)
    return {"figures": figures, "load_s": load_s, "info": {**info, **kernels}, "notes": [note]}


def measure(lm, spec: BenchSpec) -> tuple[dict, dict]:
    """In a worker: the build (or load) time of a first answer, then ``spec.repeats`` interleaved rounds of
    eager and compiled greedy decoding (tok/s), and how far the compiled logits are from the eager ones."""
    from chatcli.bench.chatcli_worker import _decode_rate, _greedy, decode_ids
    from chatcli.model.compiled.step import CompiledDecoder

    gen, n = lm.generator, spec.sizes.decode_tokens
    ids = decode_ids(lm.tokenizer)
    decoder = CompiledDecoder()
    gen.compiled = decoder
    _decode_rate(gen, ids, min(n, 8))  # the first compiled answer: the build, or the load of a built package
    if decoder.failed is not None:
        raise RuntimeError(f"the step was not compiled: {decoder.failed}")
    if decoder.reason is not None:  # not covered (e.g. an active adapter): said, not an error
        why = f"not compiled: {decoder.reason}"
        skipped = {f: why for f in ("decode_compiled_tps", "compile_cold_s", "compile_warm_s")}
        gen.compiled = None
        eager = [_decode_rate(gen, ids, n) for _ in range(spec.repeats)]
        return ({"decode_eager_tps": eager} if eager else {}), {"not_compiled": decoder.reason, "skipped": skipped}
    figures: dict[str, list[float]] = {"compile_s": [decoder.compile_s if decoder.compiles else decoder.load_s]}
    info: dict = {"packages_built": decoder.compiles, "packages_loaded": decoder.loads}
    if spec.repeats < 1:
        return figures, info
    eager, compiled = [], []
    for _ in range(spec.repeats):
        gen.compiled = None
        eager.append(_decode_rate(gen, ids, n))
        gen.compiled = decoder
        compiled.append(_decode_rate(gen, ids, n))
    figures.update(decode_eager_tps=eager, decode_compiled_tps=compiled)
    info.update(_agreement(gen, decoder, ids, n, _greedy(n)))
    return figures, info


def _agreement(gen, decoder, ids: list[int], n: int, params) -> dict:
    """Greedy answers eager and compiled: identical ids?, and the largest |logit| difference along
    the eager answer (both steps fed the eager answer's tokens, from the same prefilled cache)."""
    import torch

    from chatcli.engine.events import Step
    from chatcli.model.decode_step import DecodeStep

    answers = []
    for compiled in (None, decoder):
        gen.compiled = compiled
        gen.reset()
        answers.append([ev.id for ev in gen.stream(ids, params, eos_ids=()) if isinstance(ev, Step)])
    gen.compiled = None
    model = gen.model
    diff = 0.0
    with torch.inference_mode():
        from chatcli.model.kv_cache import KVCache

        base = KVCache(model.config, 1, model.dtype, "cpu")
        base.ensure(len(ids) + n + 1)
        model(torch.tensor([ids]), base, last_only=True)
        a, b = base, base.clone()
        eager_step = DecodeStep.build(model)
        step = decoder.step(model, b, len(ids) + n + 1)
        for token in answers[0][:n]:
            x = torch.tensor([[token]])
            diff = max(diff, (eager_step(x, a).float() - step(x, b).float()).abs().max().item())
    return {"greedy_identical": answers[0] == answers[1], "max_logit_diff": diff, "greedy_tokens": len(answers[0])}
