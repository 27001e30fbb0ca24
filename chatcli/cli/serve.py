"""``chatcli serve``: the local engine behind an OpenAI-compatible HTTP API (see chatcli/serve/)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from chatcli.cli.common import (
    CompileOpt, DeviceOpt, DtypeOpt, ModelOpt, QuantizeOpt, ThreadsOpt, check_dtype, check_quantize, set_threads,
)
from chatcli.errors import UsageError


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback needs --api-key-env."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    model: str = ModelOpt,
    api_key_env: str | None = typer.Option(
        None, "--api-key-env", metavar="VAR",
        help="Name of the environment variable holding the API key clients must send as 'Authorization: Bearer KEY'.",
    ),
    adapter_dir: list[Path] | None = typer.Option(
        None, "--adapter-dir", metavar="DIR",
        help="Folder /v1/load_lora_adapter may load from (repeatable; default: the user adapter folder and the demo adapters).",
    ),
    dtype: str = DtypeOpt,
    quantize: str = QuantizeOpt,
    compile_: bool | None = CompileOpt,
    device: str = DeviceOpt,
    threads: int | None = ThreadsOpt,
    lora: list[str] | None = typer.Option(
        None, "--lora", metavar="PATH",
        help="LoRA adapter loaded at start (repeatable): served as its own model id, off for the base model.",
    ),
    served_model_name: list[str] | None = typer.Option(
        None, "--served-model-name", metavar="NAME",
        help="The name clients send as 'model' (repeatable: several names for one model), listed by /v1/models, "
        "as vLLM's --served-model-name. Default: --model as given.",
    ),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn's log level: debug, info, warning, error."),
) -> None:
    """Serve the model over an OpenAI-compatible API (/v1/chat/completions, /v1/completions, /v1/models,
    and vLLM's /tokenize, /detokenize)."""
    if not 0 < port < 65536:
        raise UsageError(f"invalid --port {port}: use 1-65535")
    check_dtype(dtype)
    quantize = check_quantize(quantize)
    set_threads(threads)
    api_key = _api_key(api_key_env, host)
    names = _served_names(served_model_name, model)
    dirs = None
    if adapter_dir:
        missing = [d for d in adapter_dir if not d.expanduser().is_dir()]
        if missing:
            raise UsageError(f"--adapter-dir {missing[0]} is not a folder: create it or fix the path")
        dirs = [d.expanduser() for d in adapter_dir]

    from chatcli.engine.loader import load_engine
    from chatcli.progress import stderr_progress
    from chatcli.serve.server import build, serve_forever

    with stderr_progress() as progress:
        engine = load_engine(model, dtype=dtype, device=device, progress=progress, lora=lora or (), quantize=quantize,
                             compile="auto" if compile_ is None else compile_)  # unset: as generate and chat
    if engine.generator.compiled is not None:  # no one reads a request's Notices here: its lines go to the log
        engine.generator.compiled.say = lambda line: sys.stderr.write(f"chatcli: {line}\n")
    app = build(engine, model_id=names, adapter_dirs=dirs, api_key=api_key)
    adapters = app.state.chatcli.adapters
    sys.stderr.write(
        f"chatcli: serving {model}{_as_names(names, model)} at http://{host}:{port}/v1 "
        f"({'API key required' if api_key else 'no API key'}; "
        f"adapters from {', '.join(map(str, adapters.allowed))})\n"
    )
    serve_forever(app, host, port, log_level=log_level)


def _served_names(given: list[str] | None, model: str) -> list[str]:
    """The names the model answers to: each --served-model-name once, in order; else --model."""
    names = [n.strip() for n in given or ()]
    if any(not n for n in names):
        raise UsageError("--served-model-name needs a non-empty name (clients send it as 'model')")
    return list(dict.fromkeys(names)) or [model]


def _as_names(names: list[str], model: str) -> str:
    return "" if names == [model] else f" as {', '.join(names)}"


def _api_key(var: str | None, host: str) -> str | None:
    from chatcli.serve.server import is_loopback

    if var is None:
        if not is_loopback(host):
            raise UsageError(
                f"--host {host} makes the model reachable from the network: set --api-key-env VAR "
                "(the name of an environment variable holding the key)"
            )
        return None
    key = os.environ.get(var, "").strip()
    if not key:
        raise UsageError(f"--api-key-env {var}: that environment variable is not set or empty; export it first")
    return key


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
