"""The compiled decode step as a file: exported once, compiled ahead of time, loaded in milliseconds.

``torch.compile`` re-traces the step with dynamo in every new process (8-10 s on the default model even
with inductor's caches warm: the issue's ~2 s bound for a default is out of reach that way). Here the
step is exported once (``torch.export``, one symbolic cache length, so one file serves every answer),
compiled by AOTInductor to a shared library and kept as a ``.pt2`` package under
``<cache>/compiled/``; a later process loads it with torch's C++ loader (a few milliseconds, no dynamo,
no inductor import) and hands it the model's own weights (``user_managed``: no copy, no second set in
memory). The package holds code only, no weights, so models of one shape share it.

* :class:`StepModule` wraps a :class:`~chatcli.model.compiled.step_plan._Plan` as a module whose buffers are
  the plan's tensors under stable names (and whose submodules are its quantised layers), so the
  exported program's constants can be matched to the live model's tensors by name in any process.
* :func:`package_key` names the package by everything the compiled code depends on: each constant's
  name, shape, strides and dtype, the plan's scalars, the quantised layers' types and sizes, the torch
  version, the CPU's vector ISA, and the source of the step itself (a changed step never loads an old
  file).
* :func:`build` exports and compiles into a temporary file and renames it into place (a reader never
  sees half a package; two builders racing both write whole files).
* :func:`load` returns a :class:`LoadedPackage`: call it like the step; :meth:`LoadedPackage.bind` points
  it at a plan's tensors (again only when they moved).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from chatcli.model.compiled.step_plan import _decode, _Plan

FORMAT = 1  # bump when the package's calling convention changes
MIN_LENGTH = 16  # the smallest cache length the exported program accepts


class StepModule(nn.Module):
    """``_decode(plan, ...)`` as a module: the plan's tensors are its buffers (each tensor once, by
    identity: a tied head and embedding are one constant), its quantised layers are its submodules."""

    def __init__(self, plan_: _Plan):
        super().__init__()
        self._names: dict[int, str] = {}
        self._spec = self._register(plan_, "w")

    def _register(self, obj, prefix: str):
        if isinstance(obj, torch.Tensor):
            if id(obj) not in self._names:
                name = prefix.replace(".", "_")
                self.register_buffer(name, obj)  # persistent: export lists it once, as a buffer
                self._names[id(obj)] = name
            return ("tensor", self._names[id(obj)])
        if isinstance(obj, nn.Module):
            name = prefix.replace(".", "_")
            self.add_module(name, obj)
            return ("module", name)
        if dataclasses.is_dataclass(obj):
            fields = {f.name: self._register(getattr(obj, f.name), f"{prefix}.{f.name}") for f in dataclasses.fields(obj)}
            return ("dataclass", type(obj), fields)
        if isinstance(obj, tuple):
            return ("tuple", tuple(self._register(o, f"{prefix}.{i}") for i, o in enumerate(obj)))
        return ("value", obj)

    def _rebuild(self, spec):
        kind = spec[0]
        if kind in ("tensor", "module"):
            return getattr(self, spec[1])
        if kind == "dataclass":
            return spec[1](**{n: self._rebuild(s) for n, s in spec[2].items()})
        if kind == "tuple":
            return tuple(self._rebuild(s) for s in spec[1])
        return spec[1]

    def forward(self, ids, pos, keys, values, cos, sin):
        return _decode(self._rebuild(self._spec), ids, pos, keys, values, cos, sin)

    def constants(self) -> dict[str, torch.Tensor]:
        """Every tensor the compiled code reads, by the name the package gives it."""
        named = dict(self.named_buffers(remove_duplicate=False))
        named.update(self.named_parameters(remove_duplicate=False))
        return named

    def scalars(self) -> list:
        """The plan's non-tensor values (heads, eps, splits...), in a stable order, for the key."""
        out: list = []

        def walk(spec):
            if spec[0] == "value":
                out.append(spec[1])
            elif spec[0] == "module":
                m = getattr(self, spec[1])
                out.append([type(m).__qualname__, sorted((k, v) for k, v in vars(m).items()
                                                          if isinstance(v, (int, float, bool, str)))])  # fmt: skip
            elif spec[0] == "dataclass":
                for s in spec[2].values():
                    walk(s)
            elif spec[0] == "tuple":
                for s in spec[1]:
                    walk(s)

        walk(self._spec)
        return out


def uncovered(plan_: _Plan) -> str | None:
    """Why a package cannot run this plan, or None. Quantised layers: inductor folds their weights
    (the int4 kernel's packed layout, the int8 scales' casts) into new constants at build time, and a
    package of code only has no values for those, so only float weights are bound."""
    modules = [plan_.embed_module, plan_.head.module] + [p.module for layer in plan_.layers
                                                         for p in (layer.qkv, layer.o, layer.gate_up, layer.down)]  # fmt: skip
    if any(m is not None for m in modules):
        return "quantised layers are not covered: inductor folds their weights into constants a package cannot bind"
    return None


def package_key(module: StepModule, rows: int = 1) -> str:
    """The name of the package that runs ``module`` (see the module docstring for what it covers)."""
    from chatcli.model.compiled import step_plan as plan_source

    tensors = [[n, list(t.shape), list(t.stride()), str(t.dtype)] for n, t in sorted(module.constants().items())]
    source = hashlib.sha256(Path(plan_source.__file__).read_bytes() + Path(__file__).read_bytes()).hexdigest()
    what = {"format": FORMAT, "rows": rows, "tensors": tensors, "scalars": repr(module.scalars()),
            "torch": torch.__version__, "isa": torch.backends.cpu.get_cpu_capability(), "source": source}  # fmt: skip
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def example_args(module: StepModule, config, dtype: torch.dtype, length: int = 256) -> tuple:
    """Inputs of the step's shapes for export (a cache of ``length`` positions, zeroed)."""
    kv, dh = config.num_key_value_heads, config.head_dim
    keys = [torch.zeros(1, kv, length, dh, dtype=dtype) for _ in range(config.num_hidden_layers)]
    values = [torch.zeros(1, kv, length, dh, dtype=dtype) for _ in range(config.num_hidden_layers)]
    table = torch.zeros(length, 1, dh, dtype=dtype)
    return (torch.zeros(1, 1, dtype=torch.long), torch.tensor(0), keys, values, table, table.clone())


def export(module: StepModule, config, dtype: torch.dtype):
    """The step as an ExportedProgram with one symbolic cache length (keys, values and rotary tables)."""
    args = example_args(module, config, dtype)
    n = torch.export.Dim("length", min=MIN_LENGTH, max=max(MIN_LENGTH + 1, config.context_length))
    per_layer = [{2: n} for _ in args[2]]
    shapes = (None, None, per_layer, [dict(d) for d in per_layer], {0: n}, {0: n})
    return torch.export.export(module, args, dynamic_shapes=shapes, strict=False)


def build(module: StepModule, config, dtype: torch.dtype, path: Path) -> Path:
    """Export and compile ``module`` into the package ``path`` (atomically); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.pt2")  # inductor wants the .pt2 suffix
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's own deprecation warnings are not the person's to read
            program = export(module, config, dtype)
            torch._inductor.aoti_compile_and_package(
                program, package_path=str(tmp),
                inductor_configs={"aot_inductor.package_constants_in_so": False},  # code only: weights bound at load
            )  # fmt: skip
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class LoadedPackage:
    """A compiled step loaded from its package; called like the step, on tensors bound by :meth:`bind`."""

    def __init__(self, path: Path):
        # torch's C++ loader directly: importing torch._inductor.package costs ~1 s, the loader ~3 ms.
        self._loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)
        self._names = set(self._loader.get_constant_fqns())
        self._bound: tuple[int, ...] | None = None

    def bind(self, constants: dict[str, torch.Tensor]) -> None:
        """Point the compiled code at these tensors (no copy: the caller keeps them alive)."""
        missing = self._names - constants.keys()
        if missing:
            raise RuntimeError(f"the compiled package needs {sorted(missing)[:3]}, which the model lacks")
        chosen = {n: constants[n] for n in self._names}
        ids = tuple(sorted((n, t.data_ptr()) for n, t in chosen.items()))
        if ids != self._bound:
            self._loader.load_constants(chosen, False, True, True)  # (use_inactive, check_full_update, user_managed)
            self._bound = ids

    def __call__(self, ids, pos, keys, values, cos, sin) -> torch.Tensor:
        (out,) = self._loader.boxed_run([ids, pos, *keys, *values, cos, sin])
        return out


def load(path: Path) -> LoadedPackage:
    return LoadedPackage(path)
