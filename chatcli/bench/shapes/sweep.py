"""The scaling sweep: every shape × variant through the bench's own runner, one row per system.

A *variant* is what a person passes to ``chatcli generate``: ``float32`` and
``bfloat16`` (``--dtype``), ``int8`` and ``int4`` (``--quantize`` at the default float32
``--dtype``). For each shape (its checkpoint built once, :mod:`.random_weights`) and
variant, :func:`chatcli.bench.runner.run_bench` runs the figure groups (prefill, decode,
and the training group where the bench has one), each in its own worker process, with
the baselines beside chatcli; baselines run the float variants only (transformers has
no int8/int4 CPU path of its own), and chatcli's quantized rows are compared with the
baseline at their ``--dtype``, float32.

The result (schema ``chatcli-bench-shapes/1``) is a plain dict: ``machine``,
``settings``, ``read_gb_s`` (one single-stream bandwidth measurement for the whole
sweep), ``rows`` (shape, params, system, variant, ``figures`` per id with
``median``/``min``/``max``/``runs`` or ``error``, ``ratio`` per baseline, load time, peak
RSS, and for chatcli the bytes a decode step reads and the floor they allow) and
``notes`` and ``wall_s`` (the measuring, after any checkpoint was built). Nothing is
estimated except the floor, which says so.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from chatcli.bench.shapes.architectures import Shape
from chatcli.bench.spec import BenchSpec, Sizes

SCHEMA = "chatcli-bench-shapes/1"
# variant -> (--dtype, --quantize)
VARIANTS: dict[str, tuple[str, str | None]] = {
    "float32": ("float32", None), "bfloat16": ("bfloat16", None), "int8": ("float32", "int8"),
    "int4": ("float32", "int4"),
}  # fmt: skip
# The groups a shape run can measure, in the bench's order ("train" only where the bench has it).
SHAPE_GROUPS = ("prefill", "decode", "train")
_NOT_ROWS = ("load_s", "prefill_f32_tps")  # load has its own column; the bf16 target's extra prefill is not a variant


@dataclass(frozen=True)
class SweepSettings:
    shapes: tuple[Shape, ...]
    variants: tuple[str, ...]
    baselines: tuple[str, ...]
    groups: tuple[str, ...]
    sizes: Sizes
    repeats: int
    threads: int | None = None
    quick: bool = False

    def as_dict(self) -> dict:
        d = asdict(self)
        d["shapes"] = [s.name for s in self.shapes]
        return d


def run_sweep(settings: SweepSettings, say: Callable[[str], None] = lambda _m: None) -> dict:
    """Build what is missing, measure every shape × variant, and return the sweep's report."""
    from chatcli.bench.machine import machine_info
    from chatcli.bench.runner import run_bench, run_worker
    from chatcli.bench.shapes.random_weights import ensure_checkpoint
    from chatcli.bench.stats import summary

    paths = {s.name: ensure_checkpoint(s, say) for s in settings.shapes}  # all built before anything is timed
    t0 = time.perf_counter()
    notes: list[str] = []
    first = _spec(settings, settings.shapes[0], str(paths[settings.shapes[0].name]), "float32")
    say("bandwidth: single-stream read")
    bw = run_worker("python", "bandwidth", first)
    read_gb_s = summary(bw["figures"]["read_gb_s"])["median"] if "error" not in bw else None
    if read_gb_s is None:
        notes.append(f"read bandwidth not measured ({bw['error']}): no decode floor")
    rows: list[dict] = []
    for shape in settings.shapes:
        shape_rows: list[dict] = []
        for variant in settings.variants:
            spec = _spec(settings, shape, str(paths[shape.name]), variant)
            report = run_bench(spec, lambda m, v=variant, s=shape.name: say(f"{s} {v}: {m}"))
            shape_rows += _rows(shape, variant, report, read_gb_s)
            notes += [f"{shape.name} {variant}: {n}" for n in report["notes"]]
        _ratios(shape_rows, settings.baselines)
        rows += shape_rows
    return {"schema": SCHEMA, "machine": machine_info(), "settings": settings.as_dict(), "read_gb_s": read_gb_s,
            "rows": rows, "notes": list(dict.fromkeys(notes)), "wall_s": time.perf_counter() - t0}  # fmt: skip


def _spec(settings: SweepSettings, shape: Shape, path: str, variant: str) -> BenchSpec:
    dtype, quantize = VARIANTS[variant]
    # Quantized weights take no training (the trainer refuses them) and the baselines have no such path.
    groups = tuple(g for g in settings.groups if not (quantize and g == "train"))
    systems = ("chatcli",) + (settings.baselines if quantize is None else ())
    return BenchSpec(model=shape.name, path=path, dtype=dtype, threads=settings.threads, quantize=quantize,
                     repeats=settings.repeats, quick=settings.quick, sizes=settings.sizes, groups=groups,
                     systems=systems)  # fmt: skip


def _rows(shape: Shape, variant: str, report: dict, read_gb_s: float | None) -> list[dict]:
    """One row per system of one bench report."""
    from chatcli.bench.bandwidth import floor_tokens_per_s

    out = []
    for system in report["systems"]:
        figures, load_s = {}, None
        for fig in report["figures"]:
            got = fig["results"].get(system)
            if not got or "skipped" in got:
                continue
            if fig["id"] == "load_s":
                load_s = got.get("median")
            elif fig["id"] not in _NOT_ROWS:
                keep = {k: got[k] for k in ("median", "min", "max", "runs", "error") if k in got}
                figures[fig["id"]] = {"label": fig["label"], "unit": fig["unit"],
                                      "higher_is_better": fig["higher_is_better"], **keep}  # fmt: skip
        infos = report["info"].get(system, {})
        rss = [i["peak_rss_mb"] for i in infos.values() if i.get("peak_rss_mb")]
        row = {"shape": shape.name, "params": shape.param_count(), "system": system, "variant": variant,
               "dtype": report["settings"]["dtype"], "figures": figures, "load_s": load_s,
               "peak_rss_mb": max(rss) if rss else None, "ratio": {}}  # fmt: skip
        decode = infos.get("decode", {})
        if system == "chatcli" and "weight_bytes" in decode:
            row.update({k: decode[k] for k in ("weight_bytes", "kv_bytes_per_position", "mean_context")})
            if read_gb_s:
                per_token, tps = floor_tokens_per_s(read_gb_s, decode["weight_bytes"],
                                                    decode["kv_bytes_per_position"], decode["mean_context"])  # fmt: skip
                row.update(bytes_per_token=per_token, floor_tps=tps)
        out.append(row)
    return out


def _ratios(rows: list[dict], baselines: tuple[str, ...]) -> None:
    """chatcli / baseline per figure (> 1: chatcli better), against the baseline at the same --dtype."""
    by = {(r["system"], r["variant"]): r for r in rows}
    for row in (r for r in rows if r["system"] == "chatcli"):
        for base in baselines:
            other = by.get((base, row["dtype"]))
            if other is None:
                continue
            for fid, mine in row["figures"].items():
                theirs = other["figures"].get(fid, {})
                if "median" in mine and "median" in theirs:
                    a, b = mine["median"], theirs["median"]
                    row["ratio"].setdefault(base, {})[fid] = a / b if mine["higher_is_better"] else b / a


def failed_chatcli(result: dict) -> list[str]:
    """``shape variant figure`` for each chatcli figure that failed (the command then exits 1)."""
    return [f"{r['shape']} {r['variant']} {fid}" for r in result["rows"] if r["system"] == "chatcli"
            for fid, f in r["figures"].items() if "error" in f]  # fmt: skip


def dumps(result: dict) -> str:
    return json.dumps(result, indent=2, ensure_ascii=False)
