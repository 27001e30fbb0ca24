"""``/lens`` and ``/attention``: the logit lens and the attention of one step, in both chat front ends.

    /lens               the selected step (TUI) or the last answer's last step (plain REPL)
    /lens step N        step N (counted from 1) of that answer
    /lens TEXT          the token after TEXT, read as plain text (no chat template, like ``chatcli lens --raw``)
    /attention [LAYER [HEAD]]   what that step looked at: the earlier tokens with the most attention

A step is re-read from the ids it was predicted from (:func:`chatcli.chat.step_context.step_prefix`):
the lens shows, for every layer (0 = the embeddings, L = after L blocks), the top
tokens read through the final norm and the LM head and the probability of the token
the answer chose; attention shows the weights of the last prefix position (the one
that predicted the step) over every earlier token, averaged over layers and heads
unless a layer (and head) is given. Layers are numbered from 0 as in
``chatcli attention --layer``.

A front end that declares ``panel_views`` (:class:`chatcli.chat.frontend.FrontEnd`,
the TUI) opens its panel's lens or attention view on the step instead of printing;
elsewhere the result is a compact table. Work on the model runs on a background
thread where the front end has a UI thread (:func:`chatcli.chat.frontend.in_background`).
A server is refused with one line
(:func:`chatcli.chat.step_context.require_local`): it returns no hidden states.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from chatcli.chat.commands import Arg, Command, CommandContext, Registry
from chatcli.chat.frontend import in_background
from chatcli.chat.step_context import require_local, step_prefix
from chatcli.errors import ChatcliError, UsageError

LENS_TOP = 3  # tokens per layer in the printed table
ATTENTION_TOP = 10  # earlier tokens in the printed attention table
SETTLED = 0.5  # "certain": the chosen token's probability passes this


@dataclass(frozen=True)
class StepRef:
    """Step ``index`` of answer ``node``: what the probes re-read."""

    node: Any  # chatcli.chat.session.Node (an assistant answer)
    index: int

    @property
    def label(self) -> str:
        return f"step {self.index + 1} of {len(self.node.steps)}"


# --- which step ----------------------------------------------------------------------------


def local_engine(core: Any, what: str) -> Any:
    """The chat's engine when ``what`` can run on it (weights in this process), else one line saying why."""
    engine = core.engine
    if engine is None:
        raise ChatcliError("the model is still loading; try again in a moment")
    require_local(engine, what)
    if getattr(engine, "model", None) is None:
        raise UsageError(f"{what} needs chatcli's own PyTorch engine; this engine has no local model")
    return engine


def _answer(ctx: CommandContext) -> Any:
    """The answer a step is taken from: the one selected in the front end, else the last one."""
    selected = ctx.selected_step() if ctx.frontend.panel_views else None
    if selected is not None:
        return selected[0]
    for node in reversed(ctx.core.conv.path()):
        if node.role == "assistant" and node.steps:
            return node
    raise UsageError("no answer yet: send a message first, or /lens TEXT reads the token after TEXT")


def resolve_step(ctx: CommandContext, number: int | None = None) -> StepRef:
    """Step ``number`` (from 1) of the selected or last answer; None: the selected step, else its last."""
    node = _answer(ctx)
    if number is None:
        selected = ctx.selected_step() if ctx.frontend.panel_views else None
        index = selected[1] if selected is not None and selected[0] is node else len(node.steps) - 1
    else:
        if not 1 <= number <= len(node.steps):
            raise UsageError(f"no step {number} in this answer: it has steps 1 to {len(node.steps)}")
        index = number - 1
    return StepRef(node, index)


_STEP = re.compile(r"step\s+(\S+)", re.IGNORECASE)


def _step_number(text: str) -> int | None:
    """``step N`` -> N; anything else -> None (a text to read)."""
    m = _STEP.fullmatch(text.strip())
    if m is None:
        return None
    try:
        return int(m.group(1))
    except ValueError:
        raise UsageError(f"/lens step N needs a step number, not {m.group(1)!r}") from None


# --- the computations (shared with the TUI's views) ---------------------------------------


def step_lens(core: Any, ref: StepRef, *, top_n: int = 10) -> Any:
    """The logit lens of ``ref``: :class:`chatcli.engine.probes.lens.LensResult` for its chosen token."""
    from chatcli.engine.probes.lens import logit_lens

    engine = core.engine
    ids = step_prefix(core, ref.node, ref.index)
    return logit_lens(engine.model, ids, top_n=top_n, target_id=ref.node.steps[ref.index].id, tokenizer=engine.tokenizer)


def step_attention(core: Any, ref: StepRef) -> Any:
    """Where the position that predicted ``ref`` attended: :class:`chatcli.engine.probes.attention.AttentionResult`."""
    from chatcli.engine.probes.attention import attention_weights

    engine = core.engine
    return attention_weights(engine.model, step_prefix(core, ref.node, ref.index), tokenizer=engine.tokenizer)


def text_lens(engine: Any, text: str, *, top_n: int = 10) -> Any:
    """The logit lens of the token after ``text`` read as plain text; the chosen token is the model's own top-1."""
    from chatcli.engine.probes.lens import logit_lens

    ids = engine.completion_ids(text)
    if not ids:
        raise UsageError("/lens TEXT needs some text to read")
    return logit_lens(engine.model, ids, top_n=top_n, tokenizer=engine.tokenizer)  # target: the model's own top-1


# --- commands ------------------------------------------------------------------------------


def lens(ctx: CommandContext, text: str | None = None) -> None:
    engine = local_engine(ctx.core, "the logit lens")
    number = _step_number(text) if text else None
    if text and number is None:
        in_background(ctx, "/lens", lambda _: text_lens(engine, text),
                      lambda r: ctx.say(lens_table(r, title=f"after {text!r} (plain text)"), "result"))
        return
    ref = resolve_step(ctx, number)
    if ctx.frontend.panel_views:
        ctx.show_view("lens", ref.node, ref.index)
        return
    token = ref.node.steps[ref.index].token
    in_background(ctx, "/lens", lambda _: step_lens(ctx.core, ref),
                  lambda r: ctx.say(lens_table(r, title=f"{ref.label}, chose {token!r}"), "result"))


def attention(ctx: CommandContext, layer: int | None = None, head: int | None = None) -> None:
    local_engine(ctx.core, "attention")
    ref = resolve_step(ctx)
    if ctx.frontend.panel_views:
        ctx.show_view("attention", ref.node, ref.index, layer=layer, head=head)
        return
    token = ref.node.steps[ref.index].token

    def work(_progress: Any) -> Any:
        result = step_attention(ctx.core, ref)
        result.check(layer, head)  # a layer or head the model lacks: one line naming the range
        return result

    title = f"{ref.label}, chose {token!r}"
    in_background(ctx, "/attention", work, lambda r: ctx.say(attention_table(r, layer=layer, head=head, title=title), "result"))


# --- printing ------------------------------------------------------------------------------


def _pct(p: float | None) -> str:
    if p is None or p != p:
        return "–"
    if p >= 0.9995:
        return "100%"
    if p >= 0.0995:
        return f"{p * 100:.1f}%"
    return f"{p * 100:.2f}%" if p >= 0.0001 else ("<0.01%" if p > 0 else "0%")


def _bar(fraction: float, width: int) -> str:
    fraction = 0.0 if fraction != fraction else max(0.0, min(1.0, fraction))
    eighths = round(fraction * width * 8)
    full, rest = divmod(eighths, 8)
    return ("█" * full + (" ▏▎▍▌▋▊▉"[rest] if rest else "")).ljust(width)


def lens_marks(result: Any) -> dict[int, str]:
    """Layer -> what happens there to the chosen token: it becomes top-1, its probability passes 50%."""
    marks: dict[int, list[str]] = {}
    first = result.first_top_layer()
    settled = result.settled_layer(SETTLED)
    if first is not None:
        marks.setdefault(first, []).append("top-1")
    if settled is not None:
        marks.setdefault(settled, []).append(f">{SETTLED:.0%}")
    return {k: " & ".join(v) for k, v in marks.items()}


def lens_summary(result: Any) -> str:
    """One line: where the chosen token first leads and where it passes 50% (or that it never does)."""
    token = repr(result.target_token) if result.target_token is not None else "the chosen token"
    first = result.first_top_layer()
    settled = result.settled_layer(SETTLED)
    last = result.layers[-1].layer if result.layers else 0
    lead = f"{token} is top-1 from layer {first}" if first is not None else f"{token} is never top-1"
    sure = f"over {SETTLED:.0%} from layer {settled}" if settled is not None else f"never over {SETTLED:.0%}"
    return f"{lead}, {sure} (of {last}; 0 = the embeddings)"


def short_pct(p: float | None) -> str:
    """At most five characters: ``45%``, ``4.5%``, ``<0.1%``."""
    if p is None or p != p:
        return "–"
    if p >= 0.0995:
        return f"{p * 100:.0f}%"
    return f"{p * 100:.1f}%" if p >= 0.0005 else "<0.1%"


def token_label(token: str, width: int = 10) -> str:
    """A token as Python writes it (quotes show its spaces), cut to ``width`` characters."""
    text = repr(token)
    return text if len(text) <= width else text[: width - 1] + "…"


def lens_table(result: Any, *, title: str, top: int = LENS_TOP) -> RenderableType:
    """A row per layer: the chosen token's probability (bar), the top tokens, where it leads and settles.

    It fits the width it is drawn at: 3 top tokens from 76 columns, 2 from 60, else 1, and no
    bar below 44 (tokens cut to 10 characters, probabilities to 5)."""
    return _LensTable(result, title, top)


@dataclass(frozen=True)
class _LensTable:
    result: Any
    title: str
    top: int

    def __rich_console__(self, console: Any, options: Any):
        width = options.max_width
        top = min(self.top, 3 if width >= 76 else 2 if width >= 60 else 1)
        narrow = width < 44
        yield _lens_group(self.result, self.title, top, short_marks=width < 60, bar_w=0 if narrow else 6, token_w=8 if narrow else 10)


def _lens_group(result: Any, title: str, top: int, short_marks: bool, bar_w: int, token_w: int) -> RenderableType:
    head = Text.assemble(("logit lens: ", "bold"), (title, "bold"), "\n", (lens_summary(result), "dim"))
    table = Table(box=None, padding=(0, 1, 0, 0), header_style="bold")
    table.add_column("layer" if bar_w else "L", justify="right", no_wrap=True)
    chosen = token_label(result.target_token) if result.target_token is not None else "chosen"
    table.add_column(f"p({chosen})" if bar_w else "p", no_wrap=True)
    for k in range(top):
        table.add_column(f"top {k + 1}", no_wrap=True)
    table.add_column("", no_wrap=True)
    marks = lens_marks(result)
    for layer in result.layers:
        p = layer.target_prob
        cells = [str(layer.layer), Text.assemble((_bar(p or 0.0, bar_w), "cyan"), short_pct(p).rjust(6 if bar_w else 5))]
        for t in layer.top[:top]:
            cells.append(Text(f"{token_label(t.token, token_w)} {short_pct(t.prob)}", style="bold" if t.id == result.target_id else ""))
        cells += [""] * (top - len(layer.top[:top]))
        mark = marks.get(layer.layer, "")
        if short_marks and mark:
            mark = "both" if "&" in mark else mark
        if not bar_w and mark:  # a narrow screen: the summary line says it in words
            mark = {"both": "★", "top-1": "◆"}.get(mark, "✓")
        cells.append(Text(mark if not bar_w else f"◀ {mark}" if mark else "", style="bold yellow"))
        table.add_row(*cells)
    return Group(head, table)


def attention_scope(result: Any, layer: int | None, head: int | None) -> str:
    """What a row of weights is: one head, one layer's heads averaged, or everything averaged."""
    layers, heads = result.num_layers, result.num_heads
    if layer is None and head is None:
        return f"average over {layers} layers × {heads} heads"
    if head is None:
        return f"layer {layer}, average over {heads} heads"
    if layer is None:
        return f"head {head}, average over {layers} layers"
    return f"layer {layer}, head {head}"


def attention_table(result: Any, *, title: str, layer: int | None = None, head: int | None = None, top: int = ATTENTION_TOP) -> RenderableType:
    """The earlier tokens the step's position attended to most, with their weights."""
    query = result.tokens[result.position] if result.tokens else ""
    head_text = Text.assemble(
        ("attention: ", "bold"), (title, "bold"), "\n",
        (f"read at position {result.position} {token_label(query, 16)}, where the step was predicted · "
         f"{attention_scope(result, layer, head)}", "dim"),
    )  # fmt: skip
    table = Table(box=None, padding=(0, 2, 0, 0), header_style="bold")
    table.add_column("pos", justify="right", no_wrap=True)
    table.add_column("token", no_wrap=True)
    table.add_column("weight", no_wrap=True)
    for pos, w in result.top(top, layer=layer, head=head):
        table.add_row(str(pos), token_label(result.tokens[pos], 24), Text.assemble((_bar(w, 16), "magenta"), " ", _pct(w).rjust(6)))
    return Group(head_text, table)


COMMANDS = (
    Command("lens", lens, "logit lens of the selected step (or /lens step N, or /lens TEXT): the top tokens after every layer",
            (Arg("text", "text", optional=True, help="step N, or a text whose next token to read"),)),
    Command("attention", attention, "which earlier tokens the selected step attended to (/attention [LAYER [HEAD]]; default: averaged)",
            (Arg("layer", "int", optional=True), Arg("head", "int", optional=True)), aliases=("attn",)),
)  # fmt: skip


def install(registry: Registry) -> list[str]:
    """Add /lens and /attention to ``registry`` (those already there are left as they are)."""
    added = []
    for c in COMMANDS:
        if registry.get(c.name) is c:
            continue
        registry.add(c)
        added.append(c.name)
    return added
