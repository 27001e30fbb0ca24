"""``chatcli bench --shape``: its option checks (one line, before any work) and the files it writes.

The sizes default to what keeps the three public shapes' whole table under about a
quarter of an hour on two cores (a 128-token prompt, 16 decoded tokens, 2 runs after a
warm-up); ``--quick`` shrinks them to a functional check. Prefill and decode run by
default; training (the bench's ``train`` group, one 128-token row per step) only when
``--only`` names it, as in the plain bench. The markdown table goes to
stdout (``--json``: the sweep's report), and the PNG plot with the table and the JSON
beside it to ``--plot FILE`` (default: ``<data dir>/bench/scaling-<time>.png``).
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

from chatcli.bench.shapes.architectures import parse_shapes
from chatcli.bench.shapes.sweep import SHAPE_GROUPS, VARIANTS, SweepSettings
from chatcli.bench.spec import BASELINES, GROUPS, Sizes
from chatcli.errors import ChatcliError, UsageError

# Training a 1.5B model is minutes per step on two cores: it runs only when --only names it,
# with one short row per step (the sizes below where the bench's Sizes has those fields).
DEFAULT_SHAPE_GROUPS = ("prefill", "decode")
_TRAIN = {"train_batch": 1, "train_tokens": 128}
_QUICK_TRAIN = {"train_batch": 1, "train_tokens": 16}


def _sizes(train: dict[str, int], **sizes: int) -> Sizes:
    known = {f.name for f in fields(Sizes)}
    return Sizes(**sizes, **{k: v for k, v in train.items() if k in known})


SHAPE_SIZES = _sizes(_TRAIN, prompt_tokens=128, decode_tokens=16, bandwidth_mb=512)
QUICK_SHAPE_SIZES = _sizes(_QUICK_TRAIN, prompt_tokens=16, decode_tokens=4, bandwidth_mb=16, short_turns=True)
SHAPE_REPEATS, QUICK_REPEATS = 2, 1


@dataclass(frozen=True)
class ShapeOptions:
    """What ``chatcli bench`` was given, as far as ``--shape`` cares (None: not given)."""

    shape: str | None
    variants: str | None = None
    prompt_tokens: int | None = None
    decode_tokens: int | None = None
    plot: str | None = None
    baselines: tuple[str, ...] = ()
    only: str | None = None
    repeats: int | None = None
    threads: int | None = None
    quick: bool = False
    as_json: bool = False
    other_model: bool = False  # --model other than the default
    other_dtype: bool = False  # --dtype other than float32
    quantize: str | None = None
    gguf: str | None = None

    def asked(self) -> bool:
        """Whether this is a --shape run (or a --shape option given without it)."""
        return any(v is not None for v in (self.shape, self.variants, self.prompt_tokens, self.decode_tokens, self.plot))


def check(o: ShapeOptions) -> tuple[SweepSettings, Path, list[str]]:
    """The sweep's settings, the PNG's path and notes; UsageError (one line) for a bad combination."""
    if o.shape is None:
        given = next(f for f, v in (("--variants", o.variants), ("--prompt-tokens", o.prompt_tokens),
                                    ("--decode-tokens", o.decode_tokens), ("--plot", o.plot)) if v is not None)  # fmt: skip
        raise UsageError(f"{given} is for scaling runs: add --shape qwen2.5-0.5b,llama-3.2-1b,qwen2.5-1.5b")
    shapes = parse_shapes(o.shape)
    if o.other_model:
        raise UsageError("--shape measures its own random-weight checkpoints: drop --model")
    if o.other_dtype or o.quantize is not None:
        raise UsageError("with --shape, pick dtypes and quantizations with --variants float32,bfloat16,int8,int4")
    if o.gguf is not None or "llama.cpp" in o.baselines:
        raise UsageError("--shape compares with transformers: llama.cpp needs a GGUF the random checkpoints lack")
    variants = _list(o.variants, tuple(VARIANTS), "--variants") if o.variants is not None else tuple(VARIANTS)
    available = tuple(g for g in SHAPE_GROUPS if g in GROUPS)  # "train" once the bench has the group
    groups = _list(o.only, available, "--only") if o.only is not None else DEFAULT_SHAPE_GROUPS
    if o.repeats is not None and not 1 <= o.repeats <= 100:
        raise UsageError(f"invalid --repeats {o.repeats}: use an integer from 1 to 100")
    if o.threads is not None and o.threads < 1:
        raise UsageError(f"invalid --threads {o.threads}: use an integer >= 1")
    sizes = QUICK_SHAPE_SIZES if o.quick else SHAPE_SIZES
    for flag, value, field in (("--prompt-tokens", o.prompt_tokens, "prompt_tokens"),
                               ("--decode-tokens", o.decode_tokens, "decode_tokens")):  # fmt: skip
        if value is not None:
            if not 2 <= value <= 4096:
                raise UsageError(f"invalid {flag} {value}: use an integer from 2 to 4096")
            sizes = replace(sizes, **{field: value})
    short = min(s.config["max_position_embeddings"] for s in shapes)
    if sizes.needed_context() > short:
        raise UsageError(f"the sizes need {sizes.needed_context()} positions, a shape has {short}: use smaller sizes")
    notes: list[str] = []
    baselines = [b for b in BASELINES if b != "llama.cpp"] if not o.baselines else list(dict.fromkeys(o.baselines))
    bad = [b for b in baselines if b not in BASELINES]
    if bad:
        raise UsageError(f"unknown --baseline {bad[0]!r}: use {' or '.join(b for b in BASELINES if b != 'llama.cpp')}")
    if importlib.util.find_spec("transformers") is None:
        notes += [f"{b}: not installed (transformers not importable), not measured" for b in baselines]
        baselines = []
    settings = SweepSettings(
        shapes=tuple(shapes), variants=variants, baselines=tuple(baselines), groups=groups, sizes=sizes,
        repeats=o.repeats or (QUICK_REPEATS if o.quick else SHAPE_REPEATS), threads=o.threads, quick=o.quick,
    )  # fmt: skip
    return settings, _plot_path(o.plot), notes


def run(o: ShapeOptions, say) -> None:
    """Check, sweep, print the table (or JSON) and write the PNG, table and JSON; ChatcliError if chatcli failed."""
    from chatcli.bench.shapes.scaling_plot import write_plot
    from chatcli.bench.shapes.scaling_table import render_markdown
    from chatcli.bench.shapes.sweep import dumps, failed_chatcli, run_sweep
    from chatcli.paths import write_text_atomic

    settings, png, notes = check(o)
    result = run_sweep(settings, say)
    result["notes"] = notes + result["notes"]
    table = render_markdown(result)
    print(dumps(result) if o.as_json else table)
    try:
        png.parent.mkdir(parents=True, exist_ok=True)
        write_plot(result, png)
        write_text_atomic(png.with_suffix(".md"), table + "\n")
        write_text_atomic(png.with_suffix(".json"), dumps(result) + "\n")
    except OSError as e:  # the measurements are printed above: only the files are lost
        raise ChatcliError(f"could not write {png} ({e.strerror or e}): the table is above; give --plot elsewhere")
    say(f"wrote {png} (plot), {png.with_suffix('.md').name} (table) and {png.with_suffix('.json').name} beside it")
    failed = failed_chatcli(result)
    if failed:
        raise ChatcliError(f"chatcli failed to measure {', '.join(failed[:3])}: see the table's notes and the JSON")


def _list(text: str, allowed: tuple[str, ...], flag: str) -> tuple[str, ...]:
    asked = [x.strip().lower() for x in text.split(",") if x.strip()]
    unknown = [x for x in asked if x not in allowed]
    if unknown or not asked:
        raise UsageError(f"unknown {flag} {(unknown or [text])[0]!r}: use some of {','.join(allowed)}")
    return tuple(x for x in allowed if x in asked)


def _plot_path(plot: str | None) -> Path:
    if plot is None:
        from chatcli.paths import data_dir

        return data_dir() / "bench" / time.strftime("scaling-%Y%m%d-%H%M%S.png")
    path = Path(plot).expanduser()
    if path.suffix.lower() != ".png":
        raise UsageError(f"--plot {plot}: give a .png file name")
    if not path.parent.is_dir():
        raise UsageError(f"--plot {plot}: folder {path.parent} does not exist")
    return path
