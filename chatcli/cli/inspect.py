"""``chatcli tokenize`` and ``chatcli score``: how a model sees a text, and how predictable it finds it."""

from __future__ import annotations

import json
import sys

import typer

from chatcli.cli.common import (
    ChatTemplateOpt, DeviceOpt, LoraOpt, DtypeOpt, ModelOpt, QuantizeOpt, ThreadsOpt, check_dtype, check_quantize,
    read_text_arg, set_threads,
)

# rich and printed_steps are imported by the printers below: every command (generate too) imports
# this module to register its commands, and rich costs ~0.1 s of start-up.

def tokenize(
    text: str = typer.Argument(..., help="The text ('-' for stdin, '@FILE' for a file)."),
    model: str = ModelOpt,
    chat: bool = typer.Option(False, "--chat", help="Tokenize the chat prompt built from TEXT as a user message."),
    system: str | None = typer.Option(None, "--system", help="With --chat: a system message."),
    chat_template: str | None = ChatTemplateOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per token, then a summary."),
) -> None:
    """Show how TEXT becomes tokens: ids, byte pieces, boundaries and the count."""
    from chatcli.engine.loader import load_prompt_renderer
    from chatcli.tokenizer.pieces import tokenize_pieces
    from chatcli.progress import stderr_progress

    text = read_text_arg(text, "text")
    with stderr_progress() as progress:
        renderer = load_prompt_renderer(model, chat_template=chat_template, progress=progress)
    if chat:
        messages = ([] if system is None else [{"role": "system", "content": system}])
        text = renderer.render_prompt(messages + [{"role": "user", "content": text}])
    pieces = tokenize_pieces(renderer.tokenizer, text)
    if as_json:
        for p in pieces:
            print(json.dumps({"type": "token", **p.to_json()}, ensure_ascii=False))
        print(json.dumps({"type": "summary", "tokens": len(pieces), "characters": len(text),
                          "bytes": len(text.encode("utf-8"))}))
        return
    _print_pieces(text, pieces)


def _print_pieces(text: str, pieces: list) -> None:
    from rich.console import Console

    from chatcli.chat.text_commands import pieces_view

    Console(highlight=False).print(pieces_view(text, pieces))


def score(
    text: str = typer.Argument(..., help="The text ('-' for stdin, '@FILE' for a file)."),
    prompt: str | None = typer.Option(None, "--prompt", help="Score TEXT as the assistant's answer to this message."),
    system: str | None = typer.Option(None, "--system", help="With --prompt: a system message."),
    model: str = ModelOpt,
    dtype: str = DtypeOpt,
    quantize: str = QuantizeOpt,
    device: str = DeviceOpt,
    threads: int | None = ThreadsOpt,
    chat_template: str | None = ChatTemplateOpt,
    lora: list[str] | None = LoraOpt,
    top: int = typer.Option(3, "--top", help="Most probable alternatives shown per token."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per token, then a summary."),
) -> None:
    """Per-token probability, surprisal (bits) and rank of TEXT under the model, and its perplexity."""
    from chatcli import api
    from chatcli.engine.loader import load_engine
    from chatcli.progress import stderr_progress

    check_dtype(dtype)
    quantize = check_quantize(quantize)
    set_threads(threads)
    if top < 0:
        from chatcli.errors import UsageError

        raise UsageError(f"invalid --top {top}: use an integer >= 0")
    text = read_text_arg(text, "text")
    with stderr_progress() as progress:
        engine = load_engine(
            model, dtype=dtype, device=device, chat_template=chat_template, progress=progress, lora=lora or (),
            quantize=quantize, warm_up=False,  # one forward: a warm-up would only add its own time
        )
    result = api.score(engine, text, prompt=prompt, system=system, top_n=top)
    if as_json:
        for t in result.tokens:
            print(json.dumps({"type": "token", **t.to_json()}, ensure_ascii=False))
        print(json.dumps({"type": "summary", "tokens": len(result.tokens), "scored_tokens": len(result.scored),
                          "total_bits": result.total_bits, "perplexity": result.perplexity}))
        return
    _print_score(result)


def _print_score(result) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from chatcli.chat.printed_steps import certainty_style, show_token

    console = Console(highlight=False)
    tinted = Text()
    for t in result.tokens:
        tinted.append(t.token, style=certainty_style(t.prob) if t.prob is not None else "dim")
    console.print(tinted)
    table = Table(box=None, header_style="bold")
    for col, justify in (("#", "right"), ("token", "left"), ("prob", "right"), ("bits", "right"),
                         ("rank", "right"), ("model expected", "left")):
        table.add_column(col, justify=justify)
    for t in result.tokens:
        expected = Text()
        for _, tok, p in t.top:
            expected.append(f"{show_token(tok)} ", style="bold")
            expected.append(f"{p:.1%}  ", style="dim")
        table.add_row(
            str(t.index), Text(show_token(t.token), style=certainty_style(t.prob) if t.prob is not None else "dim"),
            "-" if t.prob is None else f"{t.prob:.1%}",
            "-" if t.surprisal_bits is None else f"{t.surprisal_bits:.2f}",
            "-" if t.rank is None else str(t.rank), expected,
        )
    console.print(table)
    ppl = result.perplexity
    console.print(
        f"{len(result.scored)} tokens scored, {result.total_bits:.1f} bits in all, "
        f"perplexity {ppl:.2f}" if ppl is not None else "nothing to score: the text has a single token"
    )
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command("tokenize")(tokenize)
    app.command("score")(score)
