"""``chatcli models``: pull, import, list, inspect and remove models in the cache."""

from __future__ import annotations

import json
import sys

import typer

from chatcli.cli.common import DEFAULT_MODEL

models_app = typer.Typer(help="Pull, import, list and inspect models.", no_args_is_help=True)


@models_app.command("pull")
def pull(
    name: str = typer.Argument(DEFAULT_MODEL, help="A known model name or hf:ORG/NAME."),
    force: bool = typer.Option(False, "--force", help="Fetch and convert again even if cached."),
) -> None:
    """Download (and convert once) a model into the cache."""
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
    from chatcli.hub.checkpoint import read_model_config, weight_files
    from chatcli.errors import UsageError
    from chatcli.progress import stderr_progress

    if dtype not in (None, "float32", "bfloat16", "float16"):
        raise UsageError(f"invalid --dtype {dtype!r}: use float32, bfloat16 or float16")
    source = Path(path).expanduser()
    with stderr_progress() as progress:
        if source.is_file() and source.suffix.lower() == ".gguf":
            resolved = hub.import_gguf_cached(source, progress=progress, force=force, dtype=dtype)
        else:
            resolved = hub.resolve_model(path, progress=progress)
    read_model_config(resolved)  # a directory we cannot run is refused now, not at chat time
    weight_files(resolved)
    print(resolved)


@models_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="One JSON object per model.")) -> None:
    """Known models and everything in the cache."""
    from chatcli.hub import catalog as hub

    infos = hub.list_models()
    if as_json:
        for info in infos:
            print(json.dumps(info.to_json()))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("name", "status", "architecture", "parameters", "dtype", "size", "context"):
        table.add_column(col, no_wrap=col in ("name", "architecture"))
    for i in infos:
        table.add_row(
            i.name, i.status, i.architecture or "", _count(i.parameters), i.dtype or "",
            _size(i.size_bytes), str(i.context_length or ""),
        )
    Console().print(table)


@models_app.command("info")
def info(
    name: str = typer.Argument(DEFAULT_MODEL),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Architecture, parameters, dtype, size on disk, context length, source and converter."""
    from chatcli.hub import catalog as hub

    i = hub.model_info(name)
    if as_json:
        print(json.dumps(i.to_json()))
        return
    rows = [
        ("name", i.name), ("status", i.status), ("path", i.path), ("architecture", i.architecture),
        ("parameters", _count(i.parameters)), ("dtype", i.dtype), ("size on disk", _size(i.size_bytes)),
        ("context length", i.context_length), ("source", i.source),
        ("converter", i.converter_version), ("created", i.created),
    ]
    for key, value in rows:
        if value not in (None, ""):
            sys.stdout.write(f"{key:15} {value}\n")


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
def rm(name: str = typer.Argument(..., help="A cache entry name (see `chatcli models list`).")) -> None:
    """Delete a model from the cache (local directories are never touched)."""
    from chatcli.hub import catalog as hub
    from chatcli.errors import ModelError

    if not hub.remove_model(name):
        raise ModelError(f"no cached model named {name!r}: see `chatcli models list`")
    print(f"removed {name}")


def _count(n: int | None) -> str:
    if n is None:
        return ""
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else str(n)


def _size(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
