"""``chatcli rank``: generate, annotate, export, stats (the CLI group of the rank plugin).

Imported only when ``chatcli rank ...`` runs (the plugin registers it by name).
Bad input lines are reported as ``FILE:LINE: what is wrong`` on stderr and
skipped; ``--strict`` refuses the file before anything is loaded or written.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import typer

from chatcli.cli.common import ChatTemplateOpt, DeviceOpt, DtypeOpt, ModelOpt, ThreadsOpt, check_dtype, set_threads
from chatcli.errors import UsageError
from chatcli_rank.candidates import DEFAULT_N, check_n
from chatcli_rank.jsonl import LineError

rank_app = typer.Typer(
    help="Rank answers as preference data: generate, annotate, export, stats.", no_args_is_help=True, add_completion=False
)

StoreOpt = typer.Option(None, "--store", help="The ranking database (default: rankings.sqlite3 in the data dir).")


def _report_bad_lines(errors: list[LineError], strict: bool, path: Path) -> None:
    for e in errors:
        sys.stderr.write(f"chatcli: {'error' if strict else 'warning'}: {e}{'' if strict else '; skipped'}\n")
    if errors and strict:
        raise UsageError(f"{len(errors)} bad line(s) in {path}; fix them, or run without --strict to skip them")


def _open_store(path: Path | None):
    from chatcli_rank.store import RankStore

    return RankStore.open(path)


@rank_app.command("generate")
def generate(
    prompts: Path = typer.Argument(..., help='JSONL: {"prompt": TEXT} or {"messages": [...]} per line.'),
    n: int = typer.Option(DEFAULT_N, "-n", "--n", help="Candidates per prompt (2 to 10)."),
    out: Path = typer.Option(..., "-o", "--output", help="Where to write CANDIDATES.jsonl."),
    strict: bool = typer.Option(False, "--strict", help="Refuse the file if any line is bad (default: skip bad lines)."),
    temperature: str = typer.Option("0.8", "--temperature", "-t", help="Ranking temperature; a comma list spreads the candidates over several."),
    max_tokens: int = typer.Option(256, "--max-tokens", help="Longest candidate, in tokens."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass (1 = off)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the first candidate of the first prompt (default: random)."),
    lora: list[str] | None = typer.Option(None, "--lora", help="Load a LoRA adapter, PATH_OR_NAME[:SCALE] (repeatable)."),
    lora_mix: bool = typer.Option(False, "--lora-mix", help="Spread the candidates over the base model and each adapter."),
    model: str = ModelOpt,
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
    threads: int | None = ThreadsOpt,
    chat_template: str | None = ChatTemplateOpt,
) -> None:
    """Generate N candidate answers per prompt (batched), for `chatcli rank annotate`."""
    from chatcli.engine.params import SEED_LIMIT, SamplingParams
    from chatcli_rank.command import identity_json, parse_temperatures
    from chatcli_rank.export import write_jsonl
    from chatcli_rank.jsonl import read_prompts

    check_n(n)
    temps = parse_temperatures(temperature)
    params = SamplingParams(temperature=temps[0], max_tokens=max_tokens, top_p=top_p, seed=seed)
    check_dtype(dtype)
    set_threads(threads)
    items, errors = read_prompts(prompts)
    _report_bad_lines(errors, strict, prompts)
    if not items:
        raise UsageError(f"no usable prompts in {prompts}")
    if seed is not None and seed + len(items) * n > SEED_LIMIT:  # candidate k of prompt j takes seed + j*n + k
        raise UsageError(f"invalid --seed {seed}: {len(items)} prompt(s) x {n} candidates need consecutive seeds "
                         f"below 2**64; use a seed <= {SEED_LIMIT - len(items) * n}")
    if lora_mix and not lora:
        raise UsageError("--lora-mix needs adapters: add --lora PATH (one or more)")
    specs = []
    if lora:
        from chatcli.lora.spec import resolve_adapter

        specs = [resolve_adapter(text) for text in lora]  # a missing adapter fails before the model loads

    from chatcli.engine.loader import load_engine
    from chatcli.progress import stderr_progress
    from chatcli_rank.candidates import generate_candidates

    with stderr_progress() as progress:
        engine = load_engine(model, dtype=dtype, device=device, chat_template=chat_template, progress=progress)
    engine.require_chat_template()
    if specs:
        for spec in specs:
            engine.adapters.load(spec.path, name=spec.name, scale=spec.scale)
    ident = identity_json(engine)
    first_seed = seed if seed is not None else random.randrange(2**30)

    def rows():
        with stderr_progress() as progress:
            progress("generating candidates", 0, len(items))
            for k, item in enumerate(items):
                cands = generate_candidates(engine, item.messages, params, n, temperatures=temps, lora_mix=lora_mix,
                                            base_seed=first_seed + k * n)  # fmt: skip
                row = {"messages": item.messages, "candidates": [c.to_json() for c in cands], "model": ident}
                if item.id is not None:
                    row = {"id": item.id, **row}
                yield row
                progress("generating candidates", k + 1, len(items))

    count = write_jsonl(out, rows())
    sys.stderr.write(f"chatcli: wrote {count} prompt(s) x {n} candidates to {out}\n")


@rank_app.command("annotate")
def annotate(
    candidates: Path = typer.Argument(..., help="CANDIDATES.jsonl from `chatcli rank generate`."),
    strict: bool = typer.Option(False, "--strict", help="Refuse the file if any line is bad (default: skip bad lines)."),
    store_path: Path | None = StoreOpt,
) -> None:
    """Rank the candidates one prompt after another; stopping and running again resumes."""
    from chatcli_rank.annotate import AnnotateApp, pending_items
    from chatcli_rank.jsonl import read_candidates

    items, errors = read_candidates(candidates)
    _report_bad_lines(errors, strict, candidates)
    if not items:
        raise UsageError(f"no usable items in {candidates}")
    store = _open_store(store_path)
    todo = pending_items(store, items)
    if not todo:
        print(f"all {len(items)} item(s) of {candidates} are ranked already; `chatcli rank export` writes them out")
        return
    if not sys.stdin.isatty() or not sys.stdout.isatty():
        raise UsageError("annotating needs a terminal (the ranking screen is interactive)")
    tally = AnnotateApp(store, todo, source=str(candidates), total=len(items)).run()
    left = len(pending_items(store, items))
    if tally is not None:
        print(f"ranked {tally.ranked}, all bad {tally.all_bad}, skipped {tally.skipped}; {left} item(s) left"
              + ("; run the same command again to continue" if left else ""))  # fmt: skip


@rank_app.command("export")
def export(
    fmt: str = typer.Option(..., "--format", "-f", help="dpo, reward, kto, sft or oasst."),
    out: Path | None = typer.Option(None, "-o", "--output", help="The JSONL file to write (default: stdout, as with '-').",
                                    show_default=False),
    pairs: str = typer.Option("all", "--pairs", help="all, adjacent or best-vs-rest (dpo and reward)."),
    include_truncated: bool = typer.Option(False, "--include-truncated", help="Also export answers cut at max_tokens "
                                           "(or stopped) as sft targets, chosen answers and kto 'true' examples."),
    store_path: Path | None = StoreOpt,
) -> None:
    """Write the stored rankings as training data (TRL conversational formats, or OASST trees)."""
    from chatcli_rank.export import FORMATS, PAIRS, Skipped, records, write_jsonl

    fmt, pairs = fmt.lower(), pairs.lower()
    if fmt not in FORMATS:
        raise UsageError(f"unknown --format {fmt!r}: use {', '.join(FORMATS)}")
    if pairs not in PAIRS:
        raise UsageError(f"unknown --pairs {pairs!r}: use {', '.join(PAIRS)}")
    store = _open_store(store_path)
    items = store.items()
    skipped = Skipped()
    rows = records(items, fmt, pairs, include_truncated=include_truncated, skipped=skipped)
    to_stdout = out is None or str(out) == "-"
    if to_stdout:
        count = 0
        for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
        sys.stdout.flush()
    else:
        count = write_jsonl(out, rows)
    where = "stdout" if to_stdout else str(out)
    sys.stderr.write(f"chatcli: wrote {count} {fmt} record(s) from {len(items)} ranking(s) to {where}\n")
    if skipped.truncated:
        sys.stderr.write(f"chatcli: left out {skipped.truncated} record(s) whose target answer is truncated "
                         "(cut at max_tokens or stopped); --include-truncated keeps them\n")  # fmt: skip


@rank_app.command("stats")
def stats(
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
    store_path: Path | None = StoreOpt,
    reward: Path | None = typer.Option(None, "--reward", help="A 'chatcli finetune reward' folder: how often it agrees with your pairs."),
    model: str | None = typer.Option(None, "--model", "-m", help="The reward model's base model (default: the one it was trained on)."),
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
) -> None:
    """Counts, contradictions and agreement between rankings (and a reward model's) in the ranking store."""
    from chatcli_rank.stats import compute_stats, render_stats

    store = _open_store(store_path)
    data = compute_stats(store)
    if reward is not None:
        from chatcli.progress import stderr_progress
        from chatcli_rank.reward_agreement import reward_agreement

        check_dtype(dtype)
        with stderr_progress() as progress:
            data["reward_agreement"] = reward_agreement(store, reward, model=model, dtype=dtype, device=device, progress=progress)
    if as_json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        render_stats(data)

