"""``--compile``: the decode step as one compiled program, built once per model shape and kept on disk.

This module holds what runs it (the decoder a generator holds, the step); the checks made once per
answer and the pure step function are in :mod:`chatcli.model.compiled.step_plan`, the package on disk
(export, AOTInductor build, millisecond load) in :mod:`chatcli.model.compiled.package`.

:class:`~chatcli.model.decode_step.DecodeStep` is exact but runs Python per product (the pointer
and LoRA checks of :func:`~chatcli.model.packed.fused_linear`) and ~1,300 eager operations per token.
Here those checks run **once per answer**, in :meth:`CompiledDecoder.step`: when every product of the
model is a plain packed weight or a quantised layer, the step is a pure function of tensors over

* token ids ``[B, 1]`` and the position as a 0-d tensor (one program for every token);
* the cache's keys/values ``[B, KV, N, Dh]`` per layer, written at the position with ``index_copy_``;
* attention over the filled positions ``[0, pos]`` (a length read from ``pos`` inside the program).

N is symbolic in the exported program, so one package serves every cache size (the generator reserves
prompt + answer before the first token, so the cache does not grow inside an answer). ``torch.export``
takes the whole step or fails: there are no graph breaks to fall into.

A bf16 model's one-row products take the path its
:class:`~chatcli.model.kernel_choice.KernelChoices` chose, here too: aten's mm, or oneDNN's prepacked
weight through :mod:`chatcli.model.compiled.onednn_op` (the same kernel, so the same bits).

Anything else (training mode, hooks, an active LoRA adapter or replaced weight, a module
swapped for an unknown one, a device other than the CPU, several rows
in one step) is not covered: :meth:`CompiledDecoder.step` returns the eager
:class:`~chatcli.model.decode_step.DecodeStep` and says why once (:attr:`CompiledDecoder.reason`).
A build that fails (no C++ compiler, an inductor error) does the same, with one line through
``say``; the answer goes on eagerly, never wrong.

Two modes: ``"on"`` (``--compile``) builds a missing package in the foreground on the first answer
(about a minute on two cores; said before the first token); ``"auto"`` (the default for CPU models: float32, int8, int4, bfloat16) uses a
package that exists and otherwise decodes eagerly and calls ``background`` once, which starts a build
in another process; the first answer after the package appears uses it.

Numbers: the compiled step's logits are the eager step's, bit for bit (float32, int8, int4, bfloat16): the package
calls ATen's kernels wherever inductor's own would round differently (see
:mod:`chatcli.model.compiled.package`), so switching it on or off never changes an answer.

Files: packages and inductor's own caches go under chatcli's cache dir (:func:`inductor_cache_dir`;
``TORCHINDUCTOR_CACHE_DIR`` wins when set, and the packages follow it), so the bench can measure a
cold build on an empty folder.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from chatcli.model.compiled import package
from chatcli.model.compiled.step_plan import NotCovered, _Plan, _run, plan
from chatcli.model.decode_step import DecodeStep
from chatcli.model.kv_cache import KVCache

CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
MODES = ("on", "auto")


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
        os.environ[CACHE_ENV] = str(path)  # torch reads the place from here only
    return os.environ[CACHE_ENV]


def package_file(key: str) -> Path:
    """The package named ``key``: beside inductor's caches (so one variable moves both)."""
    return Path(use_cache_dir()) / "chatcli-steps" / f"{key}.pt2"


def package_path(model: nn.Module, rows: int = 1) -> Path | None:
    """The package file ``model``'s decode step would use (whether or not it exists), or None when
    the model is not covered."""
    try:
        p = plan(model, rows)
    except NotCovered:
        return None
    return package_file(package.package_key(package.StepModule(p), package.source_hash(), rows))


# --------------------------------------------------------------------------- the decoder a generator holds


class CompiledDecoder:
    """Compiled decode steps for one model, held by its generator for the model's life.

    :meth:`step` gives each answer a step: a :class:`CompiledStep` when the model is covered and
    its package exists or may be built now, else the eager :class:`DecodeStep` (or None, as
    ``DecodeStep.build``). ``say`` receives one line when a build starts, and one when it fails or
    the model is not covered (once per reason). ``compiles``/``compile_s``: how many packages this
    decoder built and the seconds they took; ``loads``/``load_s``: packages loaded from disk.

    ``backend``: ``"aoti"`` (the package on disk), or for tests a callable taking the exported program
    and returning the step to call (``program.module()`` runs it without a C++ build).
    """

    def __init__(self, say: Callable[[str], None] | None = None, backend: str | Callable = "aoti",
                 mode: str = "on", background: Callable[[Path], str | None] | None = None):  # fmt: skip
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.say = say or (lambda line: None)
        self.backend = backend
        self.mode = mode
        self.background = background  # "auto": starts a build of the package path given; a line to tell, or None
        self.failed: str | None = None  # why building failed: every later answer decodes eagerly
        self.reason: str | None = None  # why the last answer's step was not compiled (None: it was)
        self.compiles = 0
        self.compile_s = 0.0
        self.loads = 0
        self.load_s = 0.0
        self._runners: dict[str, Callable] = {}
        self._source = package.source_hash() if backend == "aoti" else ""
        self._started_background = False
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
            if self.mode == "on":  # auto says nothing: the person asked for nothing
                self._tell(f"--compile: decoding eagerly ({e})")
            return eager
        module = package.StepModule(p)
        key = package.package_key(module, self._source, cache.batch_size) if self.backend == "aoti" else "memory"
        runner = self._runners.get(key)
        if runner is None and self.backend == "aoti":
            runner = self._load(package_file(key))
        if runner is None and self.mode == "auto":
            self.reason = "the compiled step is not built yet"
            if self.background is not None and not self._started_background:
                self._started_background = True
                line = self.background(package_file(key))
                if line:
                    self._tell(line, "info")
            return eager
        if runner is not None:
            self._runners[key] = runner
            if self._started_background:  # the build this decoder asked for is done: say the change
                self._tell("the compiled decode step is ready: answers decode through it from now on", "info")
        self.reason = None
        cache.ensure(max(min(total, model.config.context_length), package.MIN_LENGTH))  # no growth mid-answer
        if runner is None:
            self._tell("--compile: compiling the decode step (once per model shape, about a minute; kept on disk)",
                       "info")  # fmt: skip
        return CompiledStep(self, p, module, key, model, eager)

    def _load(self, path: Path) -> Callable | None:
        if not path.is_file():
            return None
        start = time.perf_counter()
        try:
            runner = package.load(path)
        except Exception as e:  # noqa: BLE001 - a damaged file, or a torch that cannot load it: never trusted
            path.unlink(missing_ok=True)
            # Written down, so "auto" does not rebuild it in the background at every start (--compile retries).
            path.with_suffix(".failed").write_text(f"loading it failed: {_one_line(e)}\n", encoding="utf-8")
            return None
        self.loads += 1
        self.load_s += time.perf_counter() - start
        return runner

    def _build(self, module: package.StepModule, model: nn.Module, key: str) -> Callable:
        start = time.perf_counter()
        if self.backend == "aoti":
            use_cache_dir()
            path = package.build(module, model.config, model.dtype, package_file(key))
            runner = package.load(path)
            path.with_suffix(".failed").unlink(missing_ok=True)  # an earlier failure no longer holds "auto" back
        else:
            runner = self.backend(package.export(module, model.config, model.dtype))
        self.compiles += 1
        self.compile_s += time.perf_counter() - start
        self._runners[key] = runner
        return runner


class CompiledStep:
    """One answer's compiled step: called like :class:`DecodeStep` (ids [B, 1], cache) -> logits [B, V]."""

    def __init__(self, owner: CompiledDecoder, plan_: _Plan, module: package.StepModule, key: str,
                 model: nn.Module, eager: DecodeStep | None):  # fmt: skip
        self.owner = owner
        self.plan = plan_
        self.module = module  # the plan's tensors, the compiled step's last input
        self.key = key
        self.model = model
        self.eager = eager
        self._runner: Callable | None = None

    def _ready(self) -> Callable:
        runner = self.owner._runners.get(self.key)
        return runner if runner is not None else self.owner._build(self.module, self.model, self.key)

    @torch.inference_mode()
    def __call__(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        owner = self.owner
        if owner.failed is not None:
            return self.eager(ids, cache)
        pos = cache.length
        if cache.batch_size != ids.shape[0]:
            raise ValueError(f"cache has {cache.batch_size} rows but ids has {ids.shape[0]}")
        cache.ensure(max(pos + 1, package.MIN_LENGTH))  # no-op unless the answer outgrew what was reserved
        cap = cache.capacity
        cos, sin = self.model.model.rotary_emb.table(cap, self.model.dtype)
        try:
            if self._runner is None:
                self.module.materialize()  # the oneDNN copies a bf16 plan left pending: built now, as eager does
                self._runner = self._ready()
            logits = self._runner(ids.contiguous(), torch.tensor(pos), cache.keys, cache.values,
                                  cos[:cap], sin[:cap], self.module.tensors)  # fmt: skip
        except Exception as e:  # noqa: BLE001 - a compiler failure of any kind: decode eagerly, never wrong
            owner.failed = _one_line(e)
            owner._tell(f"--compile: compiling failed, decoding eagerly ({owner.failed})")
            return self.eager(ids, cache)
        if self.plan.head.module is not None:  # the quantised head, eagerly (see _decode)
            logits = _run(self.plan.head, logits)[0].view(ids.shape[0], -1)
        cache.advance(1)
        return logits


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    name = type(e).__name__
    said = f"{name} {text}".lower()  # inductor's InvalidCxxCompiler: "No working C++ compiler found ..."
    if "compiler" in said and ("found" in said or "invalid" in said):
        return "no working C++ compiler: install gcc or g++, or run without --compile"
    return f"{name}: {text[:160]}" if text else name
