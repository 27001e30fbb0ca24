"""``chatcli lens`` and ``chatcli attention``: inside the model for one position of a text.

``lens TEXT`` reads the next token after TEXT out of every layer (the logit lens);
``attention TEXT`` shows which earlier tokens one token attended to. Both apply the
chat template unless ``--raw`` (as ``generate`` does: the token after TEXT is then the
first token of the answer), load adapters with ``--lora``, and print a Rich table or,
with ``--json``, one JSON object on one line. A server (``--endpoint``) is refused with
one line: it returns no hidden states. The computations are the Python API's
(:func:`chatcli.api.lens`, :func:`chatcli.api.attention`).
"""

from __future__ import annotations

import json

import typer

from chatcli.cli.common import (
    ChatTemplateOpt, DeviceOpt, DtypeOpt, LoraOpt, ModelOpt, QuantizeOpt, ThreadsOpt, check_dtype,
    check_quantize, clean_arg, read_text_arg, set_threads,
)
from chatcli.errors import UsageError

# rich and torch are imported inside the commands: every command imports this module to register it.

RawOpt = typer.Option(False, "--raw", help="Plain text, no chat template (default: TEXT is a user message).")
SystemOpt = typer.Option(None, "--system", help="Without --raw: a system message.")
EndpointOpt = typer.Option(None, "--endpoint", help="Refused: a server returns no hidden states or "
                           "attention weights (these need the model's weights in this process).")


def _refuse_endpoint(endpoint: str | None, command: str) -> None:
    if endpoint is not None:
        raise UsageError(f"chatcli {command} needs the model's weights in this process: a server returns no hidden "
                         "states (leave out --endpoint and use a local --model)")


def _prepare(command: str, endpoint: str | None, top: int, text: str, system: str | None, model: str, **load):
    """Check the arguments both probes share, in the order errors are reported, then load the model:
    (the text, the system prompt, the engine)."""
    _refuse_endpoint(endpoint, command)
    if top < 1:
        raise UsageError(f"invalid --top {top}: use an integer >= 1")
    text = read_text_arg(text, "text")
    system = clean_arg(system, "--system") if system is not None else None
    return text, system, _load(model, **load)


def _load(model: str, *, dtype: str, quantize: str, device: str, threads: int | None, chat_template: str | None,
          lora: list[str] | None):
    from chatcli.engine.loader import load_engine
    from chatcli.progress import stderr_progress

    check_dtype(dtype)
    quantize = check_quantize(quantize)
    set_threads(threads)
    with stderr_progress() as progress:
        return load_engine(model, dtype=dtype, device=device, chat_template=chat_template, progress=progress,
                           lora=lora or (), quantize=quantize, warm_up=False)  # one forward: no warm-up


def lens(
    text: str = typer.Argument(..., help="The text ('-' for stdin, '@FILE' for a file)."),
    raw: bool = RawOpt,
    system: str | None = SystemOpt,
    top: int = typer.Option(10, "--top", help="Most probable tokens per layer (--json lists them all; the table "
                            "shows as many as fit)."),
    model: str = ModelOpt,
    dtype: str = DtypeOpt,
    quantize: str = QuantizeOpt,
    device: str = DeviceOpt,
    threads: int | None = ThreadsOpt,
    chat_template: str | None = ChatTemplateOpt,
    lora: list[str] | None = LoraOpt,
    as_json: bool = typer.Option(False, "--json", help='One line: {"type": "lens", "layers": [...]}.'),
    endpoint: str | None = EndpointOpt,
) -> None:
    """The logit lens: the next token after TEXT read out after every layer, embeddings to output."""
    text, system, engine = _prepare("lens", endpoint, top, text, system, model, dtype=dtype, quantize=quantize,
                                    device=device, threads=threads, chat_template=chat_template, lora=lora)
    from chatcli import api

    result = api.lens(engine, text, raw=raw, top_n=top, system=system)
    if as_json:
        print(json.dumps(result.to_json(), ensure_ascii=False))
        return
    from chatcli.cli.probe_views import print_lens

    print_lens(result, engine.tokenizer.decode(api.probe_ids(engine, text, raw=raw, system=system)))


def attention(
    text: str = typer.Argument(..., help="The text ('-' for stdin, '@FILE' for a file)."),
    raw: bool = RawOpt,
    system: str | None = SystemOpt,
    position: int = typer.Option(-1, "--position", help="The query token's index in the text's tokens "
                                 "(chat template included; negative counts from the end)."),
    layer: int | None = typer.Option(None, "--layer", help="One layer, from 0 (default: the average of all)."),
    head: int | None = typer.Option(None, "--head", help="One head, from 0 (default: the average of all)."),
    top: int = typer.Option(10, "--top", help="Most attended tokens listed."),
    model: str = ModelOpt,
    dtype: str = DtypeOpt,
    quantize: str = QuantizeOpt,
    device: str = DeviceOpt,
    threads: int | None = ThreadsOpt,
    chat_template: str | None = ChatTemplateOpt,
    lora: list[str] | None = LoraOpt,
    as_json: bool = typer.Option(False, "--json", help='One line: {"type": "attention", "weights": [...]}.'),
    endpoint: str | None = EndpointOpt,
) -> None:
    """Which earlier tokens one token of TEXT attended to (default: the last), averaged or per layer/head."""
    text, system, engine = _prepare("attention", endpoint, top, text, system, model, dtype=dtype, quantize=quantize,
                                    device=device, threads=threads, chat_template=chat_template, lora=lora)
    from chatcli import api

    result = api.attention(engine, text, raw=raw, position=position, system=system)
    result.check(layer, head)  # a layer or head the model lacks: one line naming the range, exit 2
    if as_json:
        print(json.dumps(result.to_json(layer, head), ensure_ascii=False))
        return
    from chatcli.cli.probe_views import print_attention

    print_attention(result, layer, head, top, special=engine.tokenizer.is_special)


def register(app: typer.Typer) -> None:
    app.command("lens")(lens)
    app.command("attention")(attention)
