"""Measure a loaded model's candidate paths on its own shapes and keep the fastest: :func:`calibrate`.

Three decisions, in this order, each against a baseline that is kept unless a candidate is
faster by more than :data:`MARGIN` (the noise of a short measurement):

1. **decode**: the bf16 small-rows path (oneDNN's prepacked weight or aten's plain mm; only
   for a model with bf16 float groups) and the decode thread count, together: a greedy
   decode of :data:`DECODE_TOKENS` tokens through the model's own generator per candidate, timed
   whole per token. Baseline: the plain path on the full thread budget (so a
   default that loses to the plain path is never kept); the two paths on that budget are measured
   in every round, past the deadline too (one noisy round must not pick a path that halves a big
   model's decode: the thread counts are what the deadline cuts). The oneDNN path's prepacked weights are
   built before its timed runs and kept while the candidates alternate (the final choice frees
   them when it is the plain path).
2. **bf16 oneDNN / int8 / int4 row limit** (bf16 models that chose oneDNN, quantised models): the
   first decoder layer's bf16 groups through oneDNN's prepacked weight and through aten's mm (at
   each of :data:`BF16_ROWS` rows), and its quantised products through the kernel and through the
   dequantised matmul (at each of :data:`ROWS` rows), past the default limit
   (:data:`chatcli.model.kernel_choice.DEFAULT`, 16: what decode steps and batched candidates run,
   and what the decode measurement above already timed through the kernel). The limit is the
   largest row count up to which the kernel keeps winning measurably; it only ever rises (a noisy
   moment that slowed the kernel at one row must not send every decode step through a
   dequantised weight).
3. **prefill threads**: a prefill of a prompt of :data:`PREFILL_TOKENS` tokens (time to the
   first token) per thread count. Baseline: the full budget.

Every timing is the best of :data:`ROUNDS` interleaved rounds (machine load hits all candidates
alike), after one warm-up. A decode run that is already twice as slow as the best one stops
early, and after :data:`DEADLINE_S` no new round or decision starts (candidates never measured
are not chosen), so a slow machine delays a load by seconds, not minutes (a busy one is not
calibrated on load at all: :mod:`.auto`). Nothing changes the dtype or
the quantisation. About 2-4 s for the default 135M model on 2 quiet cores; a tiny test model
takes well under a second.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone

import torch
from torch import nn

from chatcli.engine.calibration.key import calibration_key
from chatcli.engine.calibration.record import Calibration, Measurement
from chatcli.engine.calibration.threads import thread_candidates
from chatcli.engine.events import Done, Step
from chatcli.engine.params import SamplingParams
from chatcli.model.int4 import Int4Linear, packing
from chatcli.model.int8 import Int8Linear
from chatcli.model.kernel_choice import DEFAULT, KernelChoices
from chatcli.model.packed import FusedGroup, fused_linear, prepack, use_kernel_choices

MARGIN = 0.05  # a candidate must beat its baseline by more than this share to replace it
ROUNDS = 2
DECODE_TOKENS = 6
PREFILL_TOKENS = 64
ROWS = (32, 64, 128, 256)  # past the default limit of 16; a prefill chunk is up to 512
BF16_ROWS = ROWS + (512,)  # a whole prefill chunk too: 4 bf16 products of 512 rows take milliseconds
DEADLINE_S = 8.0  # no new round of measurements starts after this
_REPS = 3  # timings of the layer products per row count (after a warm-up)
_TEXT = ("The river rose slowly through the night, and by morning the old bridge stood in brown water "
         "while the town watched from the hill and counted the houses it could still see. ")  # fmt: skip


def calibrate(engine) -> Calibration:
    """Measure and choose for ``engine`` (a :class:`~chatcli.engine.loader.LoadedModel` on the CPU);
    the model keeps the choices (:func:`~chatcli.model.packed.use_kernel_choices`). Its cached
    prefix is dropped; torch's thread count is what it was before."""
    model = engine.model
    budget = torch.get_num_threads()
    key = calibration_key(model, budget)
    load = load_per_core()
    run = _Run(engine, _prompt_ids(engine.tokenizer, min(PREFILL_TOKENS, model.config.context_length // 4)))
    threads = thread_candidates(budget)
    choices = DEFAULT.with_(prefill_threads=budget, decode_threads=budget, idle_threads=budget)
    try:
        use_kernel_choices(model, choices)
        run.decode_ms(3, math.inf)  # warm-up: pages the weights in, sets the kernels up
        run.deadline = time.perf_counter() + DEADLINE_S  # (a big model's page-in is not measuring time)
        choices = run.choose_decode(choices, threads)
        choices = run.choose_bf16_rows(choices)
        for method, cls in (("int8", Int8Linear), ("int4", Int4Linear)):
            choices = run.choose_rows(method, cls, choices)
        choices = run.choose_prefill(choices, threads)
    finally:
        engine.generator.reset()
        torch.set_num_threads(budget)
    if choices.prefill_threads == budget and choices.decode_threads == budget:
        choices = choices.with_(prefill_threads=None, decode_threads=None, idle_threads=None)  # the budget: as set
    use_kernel_choices(model, choices)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    cal = Calibration(key, choices, tuple(run.rows), time.perf_counter() - run.start, created, load)
    return Calibration.from_json(cal.to_json())  # rounded as the cache keeps it: a cached copy compares equal


def load_per_core() -> float | None:
    """The 1-minute load average per CPU (None where the OS does not say; see record.BUSY_LOAD)."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except (AttributeError, OSError):
        return None


def pick(times: dict, baseline) -> object:
    """The fastest candidate when it beats ``baseline`` by more than MARGIN, else the baseline."""
    best = min(times, key=times.get)
    return best if times[best] < times[baseline] * (1 - MARGIN) else baseline


def row_limit(times: dict[int, tuple[float, float]], default: int) -> int:
    """The kernel's row limit from {rows: (kernel ms, dequantised ms)} measured past ``default``: the
    largest row count up to which the kernel keeps being measurably faster, from the fewest rows up;
    ``default`` when it is not at the first."""
    chosen = default
    for r in sorted(r for r in times if r > default):
        kernel, dense = times[r]
        if not kernel < dense * (1 - MARGIN):
            break
        chosen = r
    return chosen


def _threads_label(n: int) -> str:
    return f"{n} thread" + ("s" if n != 1 else "")


def _bf16_groups(model: nn.Module) -> bool:
    """Whether the model has float groups the bf16 oneDNN path could serve."""
    groups = [model.head_group] + [g for layer in model.model.layers for g in (
        layer.self_attn.qkv_group, layer.self_attn.o_group, layer.mlp.gate_up_group, layer.mlp.down_group)]
    return any(isinstance(g, FusedGroup) and g.onednn_ok() for g in groups)


def _prompt_ids(tokenizer, n: int) -> list[int]:
    """Exactly ``n`` ids of plain English text (its greedy continuation is words: each step yields at once)."""
    text, ids = _TEXT, []
    while len(ids) < n:
        ids = tokenizer.encode(text)
        text += _TEXT
    return ids[:n]


class _Run:
    """One calibration's measurements of one engine: the prompt, the clock, the table so far."""

    def __init__(self, engine, prompt: list[int]):
        self.model, self.gen, self.prompt = engine.model, engine.generator, prompt
        self.start = time.perf_counter()
        self.deadline = self.start + DEADLINE_S
        self.rows: list[Measurement] = []

    def late(self) -> bool:
        return time.perf_counter() > self.deadline

    # ------------------------------------------------------------ decode

    def choose_decode(self, choices: KernelChoices, threads: Sequence[int]) -> KernelChoices:
        paths = ("plain", "onednn") if _bf16_groups(self.model) else (choices.bf16_small_rows,)
        combos = [(p, t) for t in threads for p in paths]  # the paths on the whole budget first
        if len(combos) == 1:
            return choices
        baseline = combos[0]  # the plain path on the whole budget (threads[0])
        # The paths on the whole budget get every round even past the deadline: a 1.5B model fits one round in
        # it, and one round taken while its first load still churned memory chose the plain path at half speed.
        paths_full = {(p, threads[0]) for p in paths} if len(paths) > 1 else set()
        times: dict[tuple[str, int], float] = {}
        for i in range(ROUNDS):
            if i and self.late() and not paths_full:
                break
            for combo in combos:
                if self.late() and combo != baseline and combo not in paths_full and (i or combo not in times):
                    continue  # out of time: a thread count not yet measured is no candidate, a later round skips it
                best = min(times.values(), default=math.inf)
                # The oneDNN copies are kept across candidates and built before the clock starts: built
                # inside a timed run, they cost the first token a reorder of every weight (0.25 s for the
                # default model), and the oneDNN candidate measured after a plain one read ~9x too slow.
                use_kernel_choices(self.model, choices.with_(bf16_small_rows=combo[0], decode_threads=combo[1]),
                                   keep_prepacked=True)  # fmt: skip
                prepack(self.model)
                times[combo] = min(times.get(combo, math.inf), self.decode_ms(DECODE_TOKENS, 2 * best))
        best = pick(times, baseline)
        for (p, t), ms in times.items():
            label = f"{p}, {_threads_label(t)}" if len(paths) > 1 else _threads_label(t)
            self.rows.append(Measurement("decode", label, ms, baseline=(p, t) == baseline, chosen=(p, t) == best))
        return choices.with_(bf16_small_rows=best[0], decode_threads=best[1])

    def decode_ms(self, n: int, cutoff_ms: float) -> float:
        """Milliseconds per token of a greedy answer of n tokens after the cached prompt: from the call
        to its end, over n (each token is one forward and one sampling; the first forward re-runs the
        prompt's last token). Timed whole, not between steps: a step whose bytes end mid-character is
        yielded with the next one. A run slower than ``cutoff_ms`` per token stops early (it has lost)."""
        cancel = threading.Event()
        t0 = time.perf_counter()
        steps = 0
        for ev in self.gen.stream(self.prompt, SamplingParams(temperature=0, max_tokens=n), cancel=cancel, eos_ids=()):
            if isinstance(ev, Step):
                steps += 1
                if (time.perf_counter() - t0) * 1e3 > cutoff_ms * steps:
                    cancel.set()
            elif isinstance(ev, Done):
                if ev.finish_reason == "error":
                    raise RuntimeError(ev.error or "generation failed")
                steps = max(steps, ev.completion_tokens)
        return (time.perf_counter() - t0) * 1e3 / max(steps, 1)

    # ------------------------------------------------------------ the int8 / int4 row limit

    def choose_rows(self, method: str, cls: type, choices: KernelChoices) -> KernelChoices:
        """The row limit of ``method``'s kernel, from the first decoder layer's layers of class ``cls``."""
        layers = [m for m in self.model.model.layers[0].modules() if type(m) is cls]
        if cls is Int8Linear:
            layers = [m for m in layers if m.use_kernel]  # the others never take the kernel
        elif packing() is None:
            layers = []  # no int4 kernel in this torch build: every product dequantises
        if not layers or self.late():
            return choices
        field = f"{method}_max_rows"
        default = getattr(DEFAULT, field)
        torch.set_num_threads(choices.prefill_threads)  # many rows: a prefill's count
        times: dict[int, tuple[float, float]] = {}
        for r in (r for r in ROWS if r > default):
            if self.late():
                break  # out of time: the kernel is not trusted past what was measured
            xs = [torch.randn(r, m.in_features, dtype=m.dtype) for m in layers]
            times[r] = (_products_ms(layers, xs, limit=r), _products_ms(layers, xs, limit=0))
        chosen = row_limit(times, default)
        what = f"{method} rows"
        for r, (kernel, dense) in times.items():
            self.rows.append(Measurement(what, f"kernel, {r} rows", kernel, chosen=r <= chosen))
            self.rows.append(Measurement(what, f"dequantised, {r} rows", dense, baseline=True, chosen=r > chosen))
        return choices.with_(**{field: chosen})  # (measuring changed the layers' limits: the caller sets them all)

    def choose_bf16_rows(self, choices: KernelChoices) -> KernelChoices:
        """The row limit of the bf16 oneDNN path (when decode chose it), from the first decoder layer's
        bf16 groups: oneDNN's blocked weight skips the per-call packing aten's AMX mm does, which pays
        for tens of rows (a chat prompt) and not for a long prompt's hundreds."""
        layer = self.model.model.layers[0]
        pairs = [(parent, g) for parent, g in ((layer.self_attn, layer.self_attn.qkv_group),
                                               (layer.self_attn, layer.self_attn.o_group),
                                               (layer.mlp, layer.mlp.gate_up_group), (layer.mlp, layer.mlp.down_group))
                 if isinstance(g, FusedGroup) and g.onednn_ok()]  # fmt: skip
        if choices.bf16_small_rows != "onednn" or not pairs or self.late():
            return choices
        use_kernel_choices(self.model, choices, keep_prepacked=True)
        prepack(self.model)
        torch.set_num_threads(choices.prefill_threads)  # many rows: a prefill's count
        default = DEFAULT.bf16_onednn_max_rows
        times: dict[int, tuple[float, float]] = {}
        for r in (r for r in BF16_ROWS if r > default):
            if self.late():
                break
            xs = [torch.randn(r, g.weight.shape[1], dtype=torch.bfloat16) for _, g in pairs]
            times[r] = (_group_products_ms(pairs, xs, limit=r), _group_products_ms(pairs, xs, limit=0))
        chosen = row_limit(times, default)
        for r, (onednn, plain) in times.items():
            self.rows.append(Measurement("bf16 rows", f"oneDNN, {r} rows", onednn, chosen=r <= chosen))
            self.rows.append(Measurement("bf16 rows", f"plain mm, {r} rows", plain, baseline=True, chosen=r > chosen))
        choices = choices.with_(bf16_onednn_max_rows=chosen)
        use_kernel_choices(self.model, choices, keep_prepacked=True)  # (measuring changed the groups' limits)
        return choices

    # ------------------------------------------------------------ prefill threads

    def choose_prefill(self, choices: KernelChoices, threads: Sequence[int]) -> KernelChoices:
        if len(threads) == 1 or self.late():
            return choices  # (out of time: a baseline measured alone decides nothing)
        times: dict[int, float] = {}  # (no warm-up: the decode warm-up prefilled this prompt)
        for i in range(ROUNDS):
            if i and self.late():
                break
            for t in threads:
                if t != threads[0] and self.late() and t not in times:
                    continue
                use_kernel_choices(self.model, choices.with_(prefill_threads=t), keep_prepacked=True)
                times[t] = min(times.get(t, math.inf), self.prefill_ms())
        best = pick(times, threads[0])
        for t, ms in times.items():
            self.rows.append(Measurement("prefill", f"{len(self.prompt)} tokens, {_threads_label(t)}", ms,
                                         baseline=t == threads[0], chosen=t == best))  # fmt: skip
        return choices.with_(prefill_threads=best)

    def prefill_ms(self) -> float:
        """Milliseconds from asking for one token after the prompt (fresh cache) to that token."""
        self.gen.reset()
        t0 = time.perf_counter()
        for ev in self.gen.stream(self.prompt, SamplingParams(temperature=0, max_tokens=1), eos_ids=()):
            if isinstance(ev, Done) and ev.finish_reason == "error":
                raise RuntimeError(ev.error or "generation failed")
        return (time.perf_counter() - t0) * 1e3


@torch.inference_mode()
def _group_products_ms(pairs: list, xs: list[torch.Tensor], limit: int) -> float:
    """Best milliseconds of running every (parent, bf16 group) on its input, through oneDNN up to ``limit`` rows."""
    for _, g in pairs:
        g.onednn_max_rows = limit
    best = math.inf
    for i in range(1 + _REPS):
        t0 = time.perf_counter()
        for (parent, g), x in zip(pairs, xs):
            fused_linear(parent, g, x)
        if i:  # the first is the warm-up
            best = min(best, time.perf_counter() - t0)
    return best * 1e3


@torch.inference_mode()
def _products_ms(layers: list[nn.Module], xs: list[torch.Tensor], limit: int) -> float:
    """Best milliseconds of running every layer on its input, with the kernel for up to ``limit`` rows."""
    for m in layers:
        m.kernel_max_rows = limit
    best = math.inf
    for i in range(1 + _REPS):
        t0 = time.perf_counter()
        for m, x in zip(layers, xs):
            m(x)
        if i:  # the first is the warm-up
            best = min(best, time.perf_counter() - t0)
    return best * 1e3
