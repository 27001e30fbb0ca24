"""The compiled decode step as a file: exported once, compiled ahead of time, loaded in milliseconds.

``torch.compile`` re-traces the step with dynamo in every new process (8-10 s on the default model even
with inductor's caches warm: the issue's ~2 s bound for a default is out of reach that way). Here the
step is exported once (``torch.export``, one symbolic cache length, so one file serves every answer),
compiled by AOTInductor to a shared library and kept as a ``.pt2`` package; a later process loads it
with torch's C++ loader (a few milliseconds, no dynamo, no inductor import).

The weights are the step's **inputs**, not constants: the package is code only, holds no copy of any
weight (nothing extra in memory or on disk), and serves every model of one shape. As constants,
inductor folded the quantised layers' weights into new tensors the package had to carry; as inputs
nothing can be folded, so int4 and int8 models compile like float ones.

* :class:`StepModule` turns a :class:`~chatcli.model.compiled.step_plan._Plan` into a module whose last
  argument is the list of the plan's tensors (:attr:`StepModule.tensors`, each tensor once).
* :func:`package_key` names the package by everything the compiled code depends on: each input's
  shape, strides and dtype, the plan's scalars, the quantised layers' types and settings,
  the torch version, the CPU's vector ISA, and the source of the step itself (a changed step never
  loads an old file).
* :func:`build` exports and compiles into a temporary file and renames it into place (a reader never
  sees half a package; two builders racing both write whole files).
* :func:`load` returns a :class:`LoadedPackage`, called like :meth:`StepModule.forward`.

**The same numbers as the eager step, bit for bit.** Inductor's own kernels for a reduction or a
transcendental (the norms' mean, SiLU's exp) round differently from ATen's, and where the activations
pass through bfloat16 (the int4 kernel's input) such last-bit differences flip roundings and grow:
an int4 answer came out different. So :func:`build` has inductor call ATen's own kernels for exactly
those (:func:`_aten_kernels`: ``aten.mean.dim``, ``aten.silu``), attention runs ATen's kernel on the
filled positions as the eager step does, and inductor generates only loops of correctly rounded
single operations (multiplies, adds, casts, copies; no FMA contraction: inductor's default
``-ffp-contract=off``), whose results do not depend on how they are fused. The compiled step's
logits equal the eager step's exactly (float32, int8 and int4; tests/model/test_compiled_step.py).
A bfloat16 step is built with inductor's ``emulate_precision_casts``: eager rounds every operation's
result to bfloat16, and inductor would otherwise keep a fused loop's intermediates (RoPE's products,
the residual sums) in float32: the greedy answers of the default model differed after a few tokens
without it, and are the same token for token with it (and so are the logits, bit for bit, in the tests).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from chatcli.model.compiled.step_plan import PendingPack, _decode, _Plan

FORMAT = 3  # bump when the package's calling convention or numbers change (2: weights as inputs; 3: ATen's kernels)
MIN_LENGTH = 16  # the smallest cache length the exported program accepts


class _Bound:
    """A quantised layer called with its tensors swapped for the step's inputs, so the exported program
    reads them as inputs. ``owner`` holds the tensors: the layer itself, or for the int8 embedding the
    head whose rows it reads (held unregistered)."""

    def __init__(self, module: nn.Module, owner: nn.Module, tensors: dict[str, torch.Tensor]):
        self.module, self.owner, self.tensors = module, owner, tensors

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from torch.nn.utils.stateless import _reparametrize_module  # what torch.func.functional_call uses

        with _reparametrize_module(self.owner, self.tensors):
            return self.module(x)


def _owner(module: nn.Module) -> nn.Module:
    held = module.__dict__.get("head")  # Int8Embedding: its table is the head's int8 rows
    return held if isinstance(held, nn.Module) else module


class StepModule(nn.Module):
    """``_decode(plan, ...)`` as a module whose last argument is :attr:`tensors`: every tensor the plan
    reads, each once by identity (a tied head and embedding are one input)."""

    def __init__(self, plan_: _Plan):
        super().__init__()
        self.tensors: list[torch.Tensor] = []
        self._index: dict[int, int] = {}
        self._spec = self._register(plan_)

    def materialize(self) -> None:
        """Build the oneDNN copies the plan left pending (:class:`PendingPack`): before the step first runs
        or is exported."""
        self.tensors = [t.tensor() if isinstance(t, PendingPack) else t for t in self.tensors]

    def _register(self, obj):
        if isinstance(obj, (torch.Tensor, PendingPack)):
            if id(obj) not in self._index:
                self._index[id(obj)] = len(self.tensors)
                self.tensors.append(obj)
            return ("tensor", self._index[id(obj)])
        if isinstance(obj, nn.Module):
            owner = _owner(obj)
            named = {**dict(owner.named_buffers()), **dict(owner.named_parameters())}
            return ("module", obj, owner, {n: self._register(t) for n, t in named.items()})
        if dataclasses.is_dataclass(obj):
            return ("dataclass", type(obj), {f.name: self._register(getattr(obj, f.name)) for f in dataclasses.fields(obj)})
        if isinstance(obj, tuple):
            return ("tuple", tuple(self._register(o) for o in obj))
        return ("value", obj)

    def _rebuild(self, spec, weights):
        kind = spec[0]
        if kind == "tensor":
            return weights[spec[1]]
        if kind == "module":
            return _Bound(spec[1], spec[2], {n: self._rebuild(s, weights) for n, s in spec[3].items()})
        if kind == "dataclass":
            return spec[1](**{n: self._rebuild(s, weights) for n, s in spec[2].items()})
        if kind == "tuple":
            return tuple(self._rebuild(s, weights) for s in spec[1])
        return spec[1]

    def forward(self, ids, pos, keys, values, cos, sin, weights):
        return _decode(self._rebuild(self._spec, weights), ids, pos, keys, values, cos, sin)

    def scalars(self, rows: int = 1) -> list:
        """The plan's non-tensor values (heads, eps, splits, the quantised layers' settings), in a
        stable order, for the key. A layer's row limit (``kernel_max_rows``: the kernel up to that many
        rows, a dequantised product above) counts only as the side of it a ``rows``-row step falls on:
        a calibrated limit and the default one build the same program."""
        out: list = []

        def setting(name: str, value):
            return rows <= value if name.endswith("max_rows") else value

        def walk(spec):
            if spec[0] == "value":
                out.append(spec[1])
            elif spec[0] == "module":
                m = spec[1]
                out.append([type(m).__qualname__, sorted((k, setting(k, v)) for k, v in vars(m).items()
                                                          if isinstance(v, (int, float, bool, str)))])  # fmt: skip
                for s in spec[3].values():
                    walk(s)
            elif spec[0] == "dataclass":
                for s in spec[2].values():
                    walk(s)
            elif spec[0] == "tuple":
                for s in spec[1]:
                    walk(s)

        walk(self._spec)
        return out


def source_hash() -> str:
    """The hash of the step's own source (this file and the plan's): read once per decoder, not per answer."""
    from chatcli.model.compiled import step_plan as plan_source

    return hashlib.sha256(Path(plan_source.__file__).read_bytes() + Path(__file__).read_bytes()).hexdigest()


def package_key(module: StepModule, source: str, rows: int = 1) -> str:
    """The name of the package that runs ``module`` (see the module docstring for what it covers);
    ``source``: :func:`source_hash`."""
    tensors = [[list(t.shape), "mkldnn" if t.is_mkldnn else list(t.stride()), str(t.dtype)] for t in module.tensors]
    what = {"format": FORMAT, "rows": rows, "tensors": tensors, "scalars": repr(module.scalars(rows)),
            "torch": torch.__version__, "isa": torch.backends.cpu.get_cpu_capability(), "source": source}  # fmt: skip
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def example_args(module: StepModule, config, dtype: torch.dtype, length: int = 256) -> tuple:
    """Inputs of the step's shapes for export (a cache of ``length`` positions, zeroed; the weights themselves)."""
    module.materialize()
    kv, dh = config.num_key_value_heads, config.head_dim
    keys = [torch.zeros(1, kv, length, dh, dtype=dtype) for _ in range(config.num_hidden_layers)]
    values = [torch.zeros(1, kv, length, dh, dtype=dtype) for _ in range(config.num_hidden_layers)]
    table = torch.zeros(length, 1, dh, dtype=dtype)
    return (torch.zeros(1, 1, dtype=torch.long), torch.tensor(0), keys, values, table, table.clone(),
            list(module.tensors))  # fmt: skip


def export(module: StepModule, config, dtype: torch.dtype):
    """The step as an ExportedProgram with one symbolic cache length (keys, values and rotary tables)."""
    args = example_args(module, config, dtype)
    n = torch.export.Dim("length", min=MIN_LENGTH, max=max(MIN_LENGTH + 1, config.context_length))
    per_layer = [{2: n} for _ in args[2]]
    shapes = (None, None, per_layer, [dict(d) for d in per_layer], {0: n}, {0: n}, [None] * len(args[6]))
    return torch.export.export(module, args, dynamic_shapes=shapes, strict=False)


@contextlib.contextmanager
def _aten_kernels():
    """Inductor calls ATen's kernels for the mean (the norms) and SiLU while this is open, instead of
    generating its own (see the module docstring); its tables are as before afterwards."""
    from torch._inductor import decomposition, lowering

    aten = torch.ops.aten
    ops = (aten.silu.default, aten.mean.dim)
    decomps = {op: decomposition.decompositions.pop(op) for op in ops if op in decomposition.decompositions}
    lowerings = {op: lowering.lowerings.get(op) for op in ops}
    realized = set(lowering.needs_realized_inputs)  # make_fallback adds to it
    try:
        for op in ops:
            lowering.make_fallback(op, override_decomp=True, warn=False)
        yield
    finally:
        decomposition.decompositions.update(decomps)
        lowering.needs_realized_inputs.intersection_update(realized)
        for op, low in lowerings.items():
            if low is None:
                lowering.lowerings.pop(op, None)
            else:
                lowering.lowerings[op] = low


def build(module: StepModule, config, dtype: torch.dtype, path: Path) -> Path:
    """Export and compile ``module`` into the package ``path`` (atomically); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.pt2")  # inductor wants the .pt2 suffix
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's own deprecation warnings are not the person's to read
            program = export(module, config, dtype)
            # bf16: round after every operation as eager does (inductor otherwise keeps a fused loop's
            # intermediates in float32, and an answer would differ)
            with _aten_kernels(), torch._inductor.config.patch(emulate_precision_casts=dtype == torch.bfloat16):
                torch._inductor.aoti_compile_and_package(program, package_path=str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    prune(path.parent, keep=path)
    return path


UNUSED_DAYS = 30  # a package not loaded for this long (an old torch, an old chatcli, a deleted model) goes


def prune(folder: Path, keep: Path) -> None:
    """Delete what is not used for :data:`UNUSED_DAYS` (packages, which :func:`load` marks as used, and
    their marker files), and a builder's log that no build or failure explains any more (its builder
    is gone: a build that worked removes its log, one that failed leaves a ``.failed`` beside it)."""
    import time

    cutoff = time.time() - UNUSED_DAYS * 86400
    for old in folder.iterdir():
        if old == keep or old.suffix not in (".pt2", ".failed", ".log", ".building"):
            continue
        try:
            orphan = old.suffix == ".log" and not any(old.with_suffix(s).exists() for s in (".building", ".failed"))
            if orphan or old.stat().st_mtime < cutoff:
                old.unlink(missing_ok=True)
        except OSError:
            pass  # another process pruned it first


class LoadedPackage:
    """A compiled step loaded from its package; called like :meth:`StepModule.forward`."""

    def __init__(self, path: Path):
        # torch's C++ loader directly: importing torch._inductor.package costs ~1 s, the loader ~3 ms.
        self._loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)

    def __call__(self, ids, pos, keys, values, cos, sin, weights) -> torch.Tensor:
        (out,) = self._loader.boxed_run([ids, pos, *keys, *values, cos, sin, *weights])
        return out


def load(path: Path) -> LoadedPackage:
    loaded = LoadedPackage(path)
    try:
        os.utime(path)  # used now: kept by prune
    except OSError:
        pass
    return loaded
