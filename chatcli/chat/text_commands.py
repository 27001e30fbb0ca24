"""How the model sees plain text, from the chat: ``/tokenize TEXT`` and ``/complete TEXT``.

``/tokenize TEXT`` shows how TEXT becomes tokens (the view ``chatcli tokenize`` prints,
:func:`pieces_view`): banded text, then each token's id, text, bytes and span. It needs
the tokenizer in this process (a server is refused in one line).

``/complete TEXT`` continues TEXT as plain text, without the chat template, which is
what the model learned in pretraining (``chatcli generate --raw`` in one command):
at most :data:`COMPLETE_TOKENS` tokens with the chat's sampling settings, shown with
each token tinted by certainty and the first step's alternatives and entropy. The
continuation is not part of the conversation. Where the front end owns its widgets on
one thread (the TUI) it is generated on a background thread while the status bar says
so; elsewhere at once.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from chatcli.chat.commands import Arg, Command, CommandContext, Registry
from chatcli.chat.frontend import on_ui_thread
from chatcli.chat.printed_steps import certainty_style, show_token, tinted_answer
from chatcli.engine.events import Done, Step
from chatcli.engine.protocol import capabilities
from chatcli.errors import ChatcliError, UsageError, describe_bug

COMPLETE_TOKENS = 40  # enough to see where a continuation goes, short enough to wait for
_BANDS = ("on grey23", "on grey35")  # alternating backgrounds make token boundaries visible


def pieces_view(text: str, pieces: Sequence) -> RenderableType:
    """``text`` in alternating bands per token, a row per token, and the counts (``chatcli tokenize``)."""
    banded = Text()
    shown_to = 0  # a character split over several tokens is shown once, in its first token's band
    for p in pieces:
        segment = text[max(p.start, shown_to) : p.end]
        shown_to = max(shown_to, p.end)
        banded.append(segment.replace("\n", "↵\n"), style="bold magenta" if p.special else _BANDS[p.index % 2])
    table = Table(box=None, header_style="bold")
    for col, justify in (("#", "right"), ("id", "right"), ("token", "left"), ("bytes", "left"), ("chars", "left")):
        table.add_column(col, justify=justify)
    for p in pieces:
        table.add_row(
            str(p.index), str(p.id), Text(show_token(p.token), style="bold magenta" if p.special else ""),
            p.bytes.hex(" "), f"{p.start}-{p.end}",
        )  # fmt: skip
    summary = f"{len(pieces)} tokens, {len(text)} characters, {len(text.encode('utf-8'))} bytes"
    return Group(banded, table, Text(summary))


def _tokenize(ctx: CommandContext, text: str) -> None:
    from chatcli.tokenizer.pieces import tokenize_pieces

    engine = ctx.core.engine
    if engine is None:
        raise ChatcliError("the model is still loading; try again in a moment")
    tokenizer = getattr(engine, "tokenizer", None)
    if not capabilities(engine).weights_in_process or tokenizer is None:
        raise UsageError("/tokenize needs the model's tokenizer in this process; "
                         "with a server, run chatcli tokenize TEXT --model NAME in a shell")  # fmt: skip
    ctx.say(pieces_view(text, tokenize_pieces(tokenizer, text)), "result")


def completion_view(text: str, steps: Sequence[Step], done: Done | None, temperature: float) -> RenderableType:
    """The prompt (dim), its continuation tinted by certainty, and the first step's distribution."""
    how = "greedy" if temperature == 0 else f"temperature {temperature:g}"
    head = Text(f"plain continuation, no chat template ({len(steps)} tokens, {how}):", style="dim")
    body = Text.assemble((text, "dim"), tinted_answer(steps))
    if done is not None and done.finish_reason == "length":
        body.append(" …", style="dim")
    parts: list[RenderableType] = [head, body]
    if steps:
        first = steps[0]
        line = Text("first token: ", style="dim")
        for k, t in enumerate(first.top[:5]):
            if k:
                line.append(" · ", style="dim")
            line.append(repr(t.token), style=certainty_style(t.model_prob) + (" bold" if t.id == first.id else ""))
            line.append(f" {t.model_prob:.0%}" if not math.isnan(t.model_prob) else " –", style="dim")
        if not math.isnan(first.entropy):
            line.append(f"  entropy {first.entropy:.2f} bits", style="bold")
        parts.append(line)
    return Group(*parts)


def _complete(ctx: CommandContext, text: str) -> None:
    engine = ctx.core.engine
    if engine is None:
        raise ChatcliError("the model is still loading; try again in a moment")
    params = ctx.core.conv.params
    params = params.with_(max_tokens=min(params.max_tokens, COMPLETE_TOKENS))
    threaded = ctx.frontend.ui_thread
    if threaded and ctx.frontend.live_status:
        ctx.set_activity("completing")

    def work() -> None:
        steps: list[Step] = []
        done: Done | None = None
        try:
            for event in engine.complete(text, params):
                if isinstance(event, Step) and event.seq == 0:
                    steps.append(event)
                elif isinstance(event, Done):
                    done = event
            if done is not None and done.finish_reason == "error":
                raise ChatcliError(f"/complete failed: {done.error or 'generation failed'}")
            result, kind = completion_view(text, steps, done, params.temperature), "result"
        except Exception as e:
            if not threaded:
                raise
            result, kind = (e.message if isinstance(e, ChatcliError) else f"/complete failed ({describe_bug(e)})"), "error"
        if threaded:
            try:
                on_ui_thread(ctx, _show, ctx, result, kind)
            except RuntimeError:  # the app closed meanwhile
                pass
        else:
            ctx.say(result, kind)

    if not threaded:
        work()
        return
    threading.Thread(target=work, name="chatcli-complete", daemon=True).start()


def _show(ctx: CommandContext, result: RenderableType, kind: str) -> None:
    if ctx.frontend.live_status:
        ctx.set_activity(None)
    ctx.say(result, kind)


COMMANDS = (
    Command("tokenize", _tokenize, "show how TEXT becomes tokens: ids, byte pieces, boundaries and the count",
            (Arg("text", "text"),)),
    Command("complete", _complete, f"continue TEXT as plain text, without the chat template (at most {COMPLETE_TOKENS} tokens; "
            "not added to the conversation)", (Arg("text", "text"),), idle_only=True),
)  # fmt: skip


def install(registry: Registry) -> None:
    """Add ``/tokenize`` and ``/complete`` to ``registry`` (idempotent)."""
    for command in COMMANDS:
        if registry.get(command.name) is None:
            registry.add(command)
