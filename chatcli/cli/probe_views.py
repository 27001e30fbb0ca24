"""How ``chatcli lens`` and ``chatcli attention`` print their results for a person (Rich).

``print_lens``: one row per layer (0 = embeddings, last = the model's output) with the
answer token's probability, the entropy and the top tokens (as many as the terminal
fits), marking the layer where the answer first becomes the top token and the one from
which it stays above 50%. ``print_attention``: the text tinted by how much the query
token attended to each token, then the most attended tokens as a table. Token texts go
through :func:`~chatcli.chat.printed_steps.show_token` (whitespace and control
characters made visible); special tokens are magenta.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from chatcli.chat.printed_steps import certainty_style, show_token
from chatcli.engine.probes.attention import AttentionResult
from chatcli.engine.probes.lens import LensResult

SETTLED = 0.5  # "certain enough": the lens marks where the answer stays above this
_BAR = 10  # cells of a full bar


def _bar(p: float, width: int = _BAR) -> str:
    full = p * width
    return "█" * int(full) + ("▌" if full - int(full) >= 0.5 else "")


def _tail(text: str, limit: int = 70) -> str:
    shown = show_token(text)
    return shown if len(shown) <= limit else "…" + shown[-(limit - 1):]


def print_lens(result: LensResult, prompt_text: str, console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    last = len(result.layers) - 1
    first_top, settled = result.first_top_layer(), result.settled_layer(SETTLED)
    target = f"'{show_token(result.target_token or '')}'"
    console.print(Text.assemble("The token after ", (_tail(prompt_text), "bold"),
                                f"  (position {result.position}, {last} layers)"))
    marks = [" ".join(mark for mark, here in (
        ("emb", layer.layer == 0), ("out", layer.layer == last),
        ("◀top1", layer.layer == first_top), (f"◀>{SETTLED:.0%}", layer.layer == settled)) if here)
        for layer in result.layers]
    table = Table(box=None, header_style="bold", pad_edge=False)
    fixed = [("layer", 5), (f"p({target})", max(6, len(target) + 3)), ("", _BAR), ("bits", 4),
             ("", max(len(m) for m in marks))]
    for name, width in fixed:
        table.add_column(name, justify="left" if not name else "right", width=width, no_wrap=True)
    # The top tokens get what is left of the line (two cells between columns), cut with an ellipsis.
    rest = max(20, console.width - sum(w for _, w in fixed) - 2 * len(fixed))
    table.add_column("top tokens", width=rest, no_wrap=True, overflow="ellipsis")
    for layer, mark in zip(result.layers, marks):
        p = layer.target_prob or 0.0
        tops = Text()
        for t in layer.top:
            tops.append(show_token(t.token), style="bold green" if t.id == result.target_id else "bold")
            tops.append(f" {t.prob:.0%}  ", style="dim")
        table.add_row(str(layer.layer), Text(f"{p:.1%}", style=certainty_style(p)), Text(_bar(p), style="green"),
                      f"{layer.entropy:.1f}", Text(mark, style="cyan"), tops)
    console.print(table)
    console.print(_lens_summary(result, target, first_top, settled, last))


def _lens_summary(result: LensResult, target: str, first_top: int | None, settled: int | None, last: int) -> str:
    final = result.layers[-1].target_prob or 0.0
    if first_top is None:
        return f"{target} never becomes the top token ({final:.0%} at the output)."
    if settled == first_top:
        return f"{target} becomes the top token, above {SETTLED:.0%}, at layer {first_top} of {last}."
    where = f"{target} first becomes the top token at layer {first_top} of {last}"
    if settled is None:
        return f"{where}; it ends at {final:.0%}, never above {SETTLED:.0%}."
    return f"{where} and stays above {SETTLED:.0%} from layer {settled}."


def _tint(weight: float, top: float) -> str:
    """A background from dark to orange by the weight relative to the heaviest token."""
    level = 0.0 if top <= 0 else min(weight / top, 1.0) ** 0.5  # square root: small weights stay visible
    r, g, b = (int(40 + (255 - 40) * level), int(40 + (135 - 40) * level), int(40 * (1 - level)))
    return f"{'black ' if level > 0.6 else ''}on #{r:02x}{g:02x}{b:02x}"  # dark text on the bright end


def print_attention(result: AttentionResult, layer: int | None, head: int | None, top: int,
                    special: Callable[[int], bool] = lambda _: False, console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    row = result.row(layer, head)
    where = (f"layer {layer}" if layer is not None else f"the average of {result.num_layers} layers") + ", " + (
        f"head {head}" if head is not None else f"{result.num_heads} heads averaged")
    query = show_token(result.tokens[result.position])
    console.print(Text.assemble("What ", (query, "bold reverse"), f" (position {result.position}) attended to, "
                                f"{where}:"))
    heaviest = max(row)
    tinted = Text()
    for j, token in enumerate(result.tokens):
        style = _tint(row[j], heaviest)
        if result.ids and special(result.ids[j]):
            style += " bold magenta"
        if j == result.position:
            style += " underline"
        tinted.append(token.replace("\n", "↵\n"), style=style)
    console.print(tinted)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name, justify in (("#", "right"), ("pos", "right"), ("token", "left"), ("weight", "right"), ("", "left")):
        table.add_column(name, justify=justify, no_wrap=True)
    for rank, (j, w) in enumerate(result.top(top, layer, head), 1):
        is_special = bool(result.ids) and special(result.ids[j])
        table.add_row(str(rank), str(j), Text(show_token(result.tokens[j]), style="bold magenta" if is_special else "bold"),
                      f"{w:.1%}", Text(_bar(w / heaviest if heaviest else 0.0), style="dark_orange"))
    console.print(table)
    if result.position > 0 and row[0] == heaviest and row[0] > 0.3:
        console.print("The first token takes most of the weight in many heads whatever it says: an attention "
                      "sink, where a head puts its attention when it has nothing to look at.", style="dim")
