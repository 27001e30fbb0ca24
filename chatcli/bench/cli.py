"""``chatcli bench``: measure the engine on this machine, optionally beside transformers and llama.cpp.

Option checks happen here, before anything heavy runs: a bad value is one line and
exit code 2, and nothing is measured. The run itself is :func:`chatcli.bench.runner.run_bench`.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import typer

from chatcli.bench.spec import BASELINES, DEFAULT_GROUPS, GROUPS, OPT_IN, QUICK, BenchSpec, Sizes
from chatcli.cli.common import DEFAULT_MODEL
from chatcli.model.quant_choice import check_quantize
from chatcli.errors import ChatcliError, UsageError



class BenchError(ChatcliError):
    """A bench whose chatcli measurements failed (the table says which)."""


def bench(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model name, local directory, .gguf file, or hf:ORG/NAME."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 (reference), bfloat16 or float16, for every system."),
    threads: int | None = typer.Option(None, "--threads", help="torch threads in every worker (default: torch's choice)."),
    quantize: str | None = typer.Option(None, "--quantize", help="chatcli's weight quantization: int8 or int4."),
    baseline: list[str] | None = typer.Option(
        None, "--baseline", help="Also measure transformers (generate), transformers-loop (a plain KV-cache loop) or "
        "llama.cpp (repeatable); ratios per figure."
    ),
    repeats: int | None = typer.Option(None, "--repeats", help="Measured runs per figure, after a warm-up. [default: 3]"),
    only: str | None = typer.Option(
        None, "--only", help=f"Comma-separated figure groups: {','.join(GROUPS)} ({','.join(OPT_IN)}: only when named)."
    ),
    gguf: str | None = typer.Option(None, "--gguf", help="The GGUF file for --baseline llama.cpp (default: the model's own)."),
    quick: bool = typer.Option(False, "--quick", help="Tiny sizes and 2 runs: checks that everything runs (tests)."),
    compile_: bool = typer.Option(
        False, "--compile", help="Also measure the compiled decode step (chatcli generate --compile) beside the "
        "eager one, interleaved: decode tok/s, the build time on an empty cache and the load time of the built "
        "package (--only compile: that alone)."
    ),
    eager: bool = typer.Option(
        False, "--eager", help="Decode with chatcli's eager step where its default uses the compiled one (float32, "
        "int8 and int4, once built; the bench builds it first, untimed). Also when CHATCLI_COMPILE or the config's compile is false."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
    shape: str | None = typer.Option(
        None, "--shape", help="Cost vs model size: random-weight checkpoints of qwen2.5-0.5b,llama-3.2-1b,qwen2.5-1.5b "
        "(comma-separated; built once in the cache), a markdown table and a PNG plot."
    ),
    variants: str | None = typer.Option(None, "--variants", help="With --shape: float32,bfloat16,int8,int4 [default: all]."),
    prompt_tokens: int | None = typer.Option(None, "--prompt-tokens", help="With --shape: prefill prompt. [default: 128]"),
    decode_tokens: int | None = typer.Option(None, "--decode-tokens", help="With --shape: decoded tokens. [default: 16]"),
    plot: str | None = typer.Option(None, "--plot", help="With --shape: the PNG (table and JSON beside it)."),
    calibrate: bool = typer.Option(
        False, "--calibrate", help="Measure this CPU's kernel choices for the model again (--dtype, --quantize, "
        "--threads), cache them for every later load and print what was measured and chosen."
    ),
) -> None:
    """Measure load, start-up, prefill, decode, turn-10 latency, batched candidates, adapters and memory."""
    if calibrate:  # chatcli.engine.calibration: measured again, not a bench report
        given = {"--baseline": baseline, "--only": only, "--repeats": repeats, "--gguf": gguf, "--quick": quick,
                 "--shape": shape, "--compile": compile_}  # fmt: skip
        return _calibrate(model, dtype, threads, quantize, as_json, [k for k, v in given.items() if v])
    from chatcli.bench.shapes.shape_command import ShapeOptions

    shape_options = ShapeOptions(shape, variants, prompt_tokens, decode_tokens, plot, tuple(baseline or ()), only,
                                 repeats, threads, quick, as_json, model != DEFAULT_MODEL, dtype != "float32",
                                 quantize, gguf)  # fmt: skip
    if shape_options.asked():  # --shape: its own sweep (chatcli.bench.shapes), not one model's report
        if compile_:
            raise UsageError("--compile measures one model's decode step, not the --shape sweep: drop one")
        from chatcli.bench.shapes import shape_command

        return shape_command.run(shape_options, lambda msg: (sys.stderr.write(f"bench: {msg}\n"), sys.stderr.flush()))
    spec, unavailable, notes = build_spec(model, dtype, threads, quantize, baseline or [], repeats, only, gguf, quick,
                                          compile_=compile_, eager=eager)
    from chatcli.bench.report import render
    from chatcli.bench.runner import run_bench

    def progress(msg: str) -> None:
        sys.stderr.write(f"bench: {msg}\n")
        sys.stderr.flush()

    report = run_bench(spec, progress, unavailable)
    report["notes"] = notes + report["notes"]
    print(json.dumps(report, indent=2, ensure_ascii=False) if as_json else render(report))
    failed = [r["label"] for r in report["figures"] if "error" in r["results"].get("chatcli", {})]
    if failed:
        raise BenchError(f"chatcli failed to measure {', '.join(failed)}: run with --only and see the report's errors")


def build_spec(
    model: str, dtype: str, threads: int | None, quantize: str | None, baselines: list[str], repeats: int | None,
    only: str | None, gguf: str | None, quick: bool, compile_: bool = False, eager: bool = False,
) -> tuple[BenchSpec, dict[str, str], list[str]]:
    """Validate the options (UsageError, one line, before any work); the spec, unavailable baselines, notes."""
    if dtype not in ("float32", "bfloat16", "float16"):
        raise UsageError(f"invalid --dtype {dtype!r}: use float32, bfloat16 or float16")
    if threads is not None and threads < 1:
        raise UsageError(f"invalid --threads {threads}: use an integer >= 1")
    if repeats is not None and not 1 <= repeats <= 100:
        raise UsageError(f"invalid --repeats {repeats}: use an integer from 1 to 100")
    if quantize is not None:
        quantize = check_quantize(quantize)  # the CLI's own choices and message
        quantize = None if quantize == "none" else quantize
    bad = [b for b in baselines if b not in BASELINES]
    if bad:
        raise UsageError(f"unknown --baseline {bad[0]!r}: use {', '.join(BASELINES[:-1])} or {BASELINES[-1]}")
    groups = DEFAULT_GROUPS
    if only is not None:
        asked = [g.strip() for g in only.split(",") if g.strip()]
        unknown = [g for g in asked if g not in GROUPS]
        if unknown or not asked:
            raise UsageError(f"unknown --only group {(unknown or [only])[0]!r}: use some of {','.join(GROUPS)}")
        groups = tuple(g for g in GROUPS if g in asked)
    if compile_:  # beside whatever else runs (the groups keep GROUPS' order)
        groups = tuple(g for g in GROUPS if g in groups or g == "compile")
    if gguf is not None and "llama.cpp" not in baselines:
        raise UsageError("--gguf is for the llama.cpp baseline: add --baseline llama.cpp")
    notes: list[str] = []
    sizes = QUICK if quick else Sizes()
    path = _resolve(model)
    _check_context(path, sizes)
    unavailable: dict[str, str] = {}
    systems = ["chatcli"]
    for b in dict.fromkeys(baselines):
        missing = [m for m in _needs(b) if importlib.util.find_spec(m) is None]
        if missing:
            unavailable[b] = "not installed"
            notes.append(f"{b}: not installed ({', '.join(missing)} not importable)")
        systems.append(b)
    if "llama.cpp" in systems and "llama.cpp" not in unavailable:
        gguf = _gguf(path, gguf)
    spec = BenchSpec(
        model=model, path=str(path), dtype=dtype, threads=threads, quantize=quantize,
        repeats=repeats or (2 if quick else 3), quick=quick, sizes=sizes, groups=groups,
        systems=tuple(systems), gguf=gguf,
        compiled=not eager and dtype in ("float32", "bfloat16") and _compile_setting() is not False,  # as "auto" (engine/loader)
    )  # fmt: skip
    # Unavailable baselines keep their column, which says why; the runner starts no worker for them.
    return spec, unavailable, notes


def _calibrate(model: str, dtype: str, threads: int | None, quantize: str | None, as_json: bool,
               others: list[str]) -> None:
    """``--calibrate``: the options checked as for a bench, then the calibration's table (or JSON)."""
    if others:
        raise UsageError(f"--calibrate measures the kernel choices only: drop {others[0]}")
    spec, _, _ = build_spec(model=model, dtype=dtype, threads=threads, quantize=quantize, baselines=[], repeats=None,
                            only=None, gguf=None, quick=True)  # the bench's checks (quick: any context); runs nothing
    from chatcli.cli.common import set_threads
    from chatcli.engine.calibration.rerun import recalibrate
    from chatcli.engine.calibration.table import render as render_calibration

    set_threads(threads)
    cal, _, where = recalibrate(spec.path, spec.dtype, spec.quantize)
    print(json.dumps({**cal.to_json(), "cache": where}, indent=2) if as_json else render_calibration(cal, where))


def _needs(baseline: str) -> tuple[str, ...]:
    return {"transformers": ("transformers", "peft"), "transformers-loop": ("transformers",),
            "llama.cpp": ("llama_cpp",)}[baseline]  # fmt: skip


def _resolve(model: str):
    from chatcli.hub.catalog import resolve_model
    from chatcli.progress import stderr_progress

    with stderr_progress() as progress:
        return resolve_model(model, progress=progress)


def _check_context(path, sizes: Sizes) -> None:
    from chatcli.hub.checkpoint import read_model_config

    ctx = read_model_config(path).context_length
    need = sizes.needed_context()
    if need > ctx:
        raise UsageError(f"this model's context of {ctx} tokens is shorter than the bench's {need}: use --quick")


def _gguf(path, given: str | None) -> str:
    from pathlib import Path

    if given is not None:
        if not Path(given).is_file():
            raise UsageError(f"--gguf file not found: {given}")
        return given
    from chatcli.bench.gguf_source import find_gguf

    return str(find_gguf(Path(path)))


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


def _compile_setting() -> bool | None:
    """The person's `compile` setting (CHATCLI_COMPILE, then the config file), as `chatcli generate` reads
    it; None when neither sets it. The bench decodes as their commands would."""
    from chatcli.settings.config_file import read_defaults
    from chatcli.settings.env import read_env

    for layer in (read_env(), read_defaults()):
        if "compile" in layer:
            return bool(layer["compile"])
    return None
