"""``--compile``: the decode step as one static graph, compiled by torch.compile (CPU inductor).

This module holds what runs it (the decoder a generator holds, the step, the caches); the checks
made once per answer and the pure step function are in :mod:`chatcli.model.compiled_plan`.

:class:`~chatcli.model.decode_step.DecodeStep` is exact but runs Python per product (the pointer
and LoRA checks of :func:`~chatcli.model.packed.fused_linear`), which is where ``torch.compile``
broke the graph six times. Here those checks run **once per answer**, in :meth:`CompiledDecoder.step`:
when every product of the model is a plain packed weight (a :class:`~chatcli.model.packed.FusedGroup`
whose members still are its views, no adapter active) or a quantised layer (its public
``forward``: the fused :class:`~chatcli.model.packed.QuantGroup` layer, the int8 head), the step is a
pure function of tensors (:func:`_decode`) over

* token ids ``[B, 1]`` and the position as a 0-d tensor (not a Python int: one graph for every token);
* the cache's keys/values ``[B, KV, N, Dh]`` per layer, written at the position with ``index_copy_``;
* attention over the whole capacity N with a mask ``arange(N) <= pos`` (the unwritten tail is
  zeroed once per answer, so masked rows read zeros, never NaN from ``torch.empty``).

N is a *bucket* (:func:`bucket`: 256, 512, 1024, ... capped at the context): the cache is grown to
the bucket before the answer, so the graph is recompiled when an answer needs a larger bucket, never
per token (tests/model/test_compiled_step.py counts the compiles). ``fullgraph=True``: a graph break is
an error, not a silent slow path.

Anything else (training mode, hooks, an active LoRA adapter or replaced weight, a module
swapped for an unknown one, the bf16 oneDNN prepacked path chosen by the model's
:class:`~chatcli.model.kernel_choice.KernelChoices`, a device other than the CPU, several rows
in one step) is not covered: :meth:`CompiledDecoder.step` returns the eager
:class:`~chatcli.model.decode_step.DecodeStep` and says why once (:attr:`CompiledDecoder.reason`).
A compile that fails (no C++ compiler, an inductor error) does the same, with one line through
``say``; the answer goes on eagerly, never wrong.

Numbers: inductor fuses the norms, the rotation and the residual adds in its own order, so a
compiled step is close to the eager one, not bit-identical (float32: logits within ~1e-4 on the
default model; benchmarks/PERFLOG.md): float32 eager stays the parity reference, and compiling is
an option, off by default.

Caches: inductor's compiled graphs and kernels go under chatcli's cache dir
(:func:`inductor_cache_dir`), so a second process skips inductor's code generation and the C++
build (its "warm" start: dynamo still traces the step). torch reads that place only from the
``TORCHINDUCTOR_CACHE_DIR`` environment variable (and writes the variable itself when unset), so
:func:`use_cache_dir` sets it, unless the person set it, before the first compile.
"""

from __future__ import annotations

import os
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from chatcli.model.compiled_plan import NotCovered, _decode, _Plan, _run, plan
from chatcli.model.decode_step import DecodeStep
from chatcli.model.kv_cache import KVCache

FIRST_BUCKET = 256  # the KV cache's growth step: the smallest capacity a graph is compiled for
CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def bucket(n: int, context: int) -> int:
    """The capacity a compiled step runs at for ``n`` positions: the first power of two times
    256 that holds them, capped at the model's context (so at most log2(context / 256) + 1 graphs)."""
    size = FIRST_BUCKET
    while size < n:
        size *= 2
    return max(n, min(size, context))


def inductor_cache_dir() -> Path:
    """Where inductor keeps its compiled graphs and kernels for chatcli: ``<cache dir>/inductor``."""
    from chatcli.paths import cache_dir

    return cache_dir() / "inductor"


def use_cache_dir() -> str:
    """Point inductor's on-disk caches at :func:`inductor_cache_dir`, unless ``TORCHINDUCTOR_CACHE_DIR``
    is set already (the person's choice wins); returns the directory in use."""
    if not os.environ.get(CACHE_ENV):
        path = inductor_cache_dir()
        path.mkdir(parents=True, exist_ok=True)
        os.environ[CACHE_ENV] = str(path)  # torch reads the place from here only (see the module docstring)
    return os.environ[CACHE_ENV]


# --------------------------------------------------------------------------- the decoder a generator holds


class CompiledDecoder:
    """Compiled decode steps for one model, held by its generator for the model's life.

    :meth:`step` gives each answer a step: a :class:`CompiledStep` when the model is covered and
    compiling has not failed, else the eager :class:`DecodeStep` (or None, as ``DecodeStep.build``).
    ``say`` receives one line when compiling starts for a new shape, and one when it fails or the
    model is not covered (once per reason). ``compiles``/``compile_s``: how many graphs were built and
    the seconds they took (first call of each shape), for the bench and the tests.
    """

    def __init__(self, say: Callable[[str], None] | None = None, backend: str | Callable = "inductor"):
        self.say = say or (lambda line: None)
        self.backend = backend  # inductor; tests pass a counting or failing backend
        self.failed: str | None = None  # why compiling failed: every later answer decodes eagerly
        self.reason: str | None = None  # why the last answer's step was not compiled (None: it was)
        self.compiles = 0
        self.compile_s = 0.0
        self._fn: Callable | None = None
        self._shapes: set[tuple] = set()
        self._said: set[str] = set()
        self.pending: list[tuple[str, str]] = []  # told, not yet drained (see drain)

    def _tell(self, line: str, kind: str = "warning") -> None:
        if line not in self._said:
            self._said.add(line)
            self.pending.append((line, kind))
            self.say(line)

    def drain(self) -> list[tuple[str, str]]:
        """The lines told since the last call, as (line, notice kind): the generator yields them as
        :class:`~chatcli.engine.events.Notice` events, so every front end shows them its own way (the
        chat a note, ``generate`` a line on stderr) at the moment they happen."""
        lines, self.pending = self.pending, []
        return lines

    def step(self, model: nn.Module, cache: KVCache, total: int) -> "CompiledStep | DecodeStep | None":
        """The step for one answer that needs ``total`` positions in ``cache``."""
        eager = DecodeStep.build(model)
        if self.failed is not None:
            self.reason = self.failed
            return eager
        try:
            p = plan(model, cache.batch_size)
        except NotCovered as e:
            self.reason = str(e)
            self._tell(f"--compile: decoding eagerly ({e})")
            return eager
        self.reason = None
        if self._fn is None:
            use_cache_dir()
            self._fn = torch.compile(_own_copy(_decode), fullgraph=True, dynamic=False, backend=self.backend)
        _fit(cache, total, model)  # before the answer's first token: no reallocation in the token loop
        self._announce((cache.batch_size, cache.capacity, model.dtype))  # before the answer's first token shows
        return CompiledStep(self, p, model, eager)

    def _announce(self, shape: tuple) -> None:
        if shape not in self._shapes:
            self._tell(f"--compile: compiling the decode step for {shape[1]} positions (once per size; cached on disk)",
                       "info")


def _own_copy(fn: Callable) -> Callable:
    """``fn`` with a code object of its own: dynamo keeps its compiled graphs, and its limit of
    recompiles (8), per code object, so each decoder's shapes count against its own budget only."""
    code = fn.__code__.replace()  # replace() builds a new code object
    return types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def _fit(cache: KVCache, need: int, model: nn.Module) -> None:
    """Grow ``cache`` to a bucket that holds ``need`` positions (a larger bucket it has already is kept)."""
    ctx = model.config.context_length
    size = bucket(max(min(need, ctx), cache.capacity), ctx)
    if cache.capacity != size:
        cache.ensure(size)


class CompiledStep:
    """One answer's compiled step: called like :class:`DecodeStep` (ids [B, 1], cache) -> logits [B, V]."""

    def __init__(self, owner: CompiledDecoder, plan_: _Plan, model: nn.Module, eager: DecodeStep | None):
        self.owner = owner
        self.plan = plan_
        self.model = model
        self.eager = eager
        self._zeroed: list[torch.Tensor] | None = None  # the cache storage whose unwritten tail is zeroed

    @torch.inference_mode()
    def __call__(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        owner = self.owner
        if owner.failed is not None:
            return self.eager(ids, cache)
        pos = cache.length
        if cache.batch_size != ids.shape[0]:
            raise ValueError(f"cache has {cache.batch_size} rows but ids has {ids.shape[0]}")
        _fit(cache, pos + 1, self.model)  # no-op unless the answer outgrew what was reserved
        cap = cache.capacity
        if self._zeroed is not cache.keys:
            # Masked positions still enter the value product with weight 0: 0 * NaN from
            # torch.empty's memory would be NaN, so the unwritten tail is zeroed once per storage.
            for t in cache.keys + cache.values:
                t[:, :, pos:].zero_()
            self._zeroed = cache.keys  # held, so a new list cannot take its id
        cos, sin = self.model.model.rotary_emb.table(cap, self.model.dtype)
        shape = (ids.shape[0], cap, self.model.dtype)
        first = shape not in owner._shapes
        if first:
            owner._announce(shape)  # said already unless the answer outgrew its bucket
        start = time.perf_counter()
        try:
            # ids cloned here, inside inference mode: a tensor made outside it differs in dispatch
            # keys, which dynamo guards on (one extra compile for the first token otherwise).
            logits = owner._fn(self.plan, ids.clone(), torch.tensor(pos), cache.keys, cache.values,
                               cos[:cap], sin[:cap])
        except Exception as e:  # noqa: BLE001 - a compiler failure of any kind: decode eagerly, never wrong
            owner.failed = _one_line(e)
            owner._tell(f"--compile: compiling failed, decoding eagerly ({owner.failed})")
            return self.eager(ids, cache)
        if self.plan.head.module is not None:  # the quantised head, eagerly (see _decode)
            logits = _run(self.plan.head, logits)[0].view(ids.shape[0], -1)
        if first:
            owner._shapes.add(shape)
            owner.compiles += 1
            owner.compile_s += time.perf_counter() - start
        cache.advance(1)
        return logits


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    name = type(e).__name__
    said = f"{name} {text}".lower()  # inductor's InvalidCxxCompiler: "No working C++ compiler found ..."
    if "compiler" in said and ("found" in said or "invalid" in said):
        return "no working C++ compiler: install gcc or g++, or run without --compile"
    return f"{name}: {text[:160]}" if text else name
