"""How adapters are drawn: ``/lora``'s rows, the ‖ΔW‖/‖W0‖ heat table, the per-layer ablation bars,
``/compare``'s tinted answer and the steps that moved most.

Rich renderables shared by ``/lora`` and ``/lora-layers`` (TUI and REPL) and by
``chatcli lora info --model`` / ``chatcli lora layers``. Both fit 80 columns: the heat
table is a number per module (percent, three digits) on a background that deepens from
the table's smallest cell to its largest (log scale), which is marked ``◆`` (so it shows
without colour too); the ablation view is one bar per layer, longest first.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from chatcli.lora.ablation import Ablation
    from chatcli.lora.layer_norms import LayerNorms

# Backgrounds from "small" to "the largest", by share of the largest cell (dark enough for white text).
HEAT = ("#1b2533", "#1f3550", "#27486b", "#5a4a22", "#8a4f1a", "#b8431a")
MARK = "◆"
BAR = 28  # cells of the longest ablation bar


def lora_table(infos) -> Table:
    from chatcli.lora.info import scaling_rule

    table = Table(box=None, padding=(0, 1, 0, 0), header_style="bold")
    for col, justify in (("name", "left"), ("rank", "right"), ("alpha", "right"), ("scaling", "right"), ("targets", "left"),
                         ("params", "right"), ("% base", "right"), ("scale", "right"), ("on", "left"), ("merged", "left")):  # fmt: skip
        table.add_column(col, justify=justify, style="cyan" if col == "name" else None)
    for i in infos:
        rank = "/".join(map(str, i.ranks)) if len(i.ranks) > 1 else str(i.rank)
        targets = ",".join(t.removesuffix("_proj") for t in i.targets) + (f" +{','.join(i.replaces)}" if i.replaces else "")
        table.add_row(
            i.name, rank, f"{i.alpha:g}" + (" rs" if i.rslora else ""), f"{i.scaling:.3g} {scaling_rule(i.rslora)}",
            f"{targets} ({i.layers}L)",
            f"{i.params:,}", f"{i.percent:.2f}", f"{i.scale:g}",
            "[green]on[/green]" if i.enabled else "[dim]off[/dim]", "yes" if i.merged else "",
        )  # fmt: skip
    return table


def heat_style(share: float) -> str:
    """The background of a cell at ``share`` (0..1) of the way from the table's smallest value to its largest."""
    i = min(len(HEAT) - 1, max(0, int(share * len(HEAT))))
    return f"on {HEAT[i]}"


def heat_share(value: float, lo: float, hi: float) -> float:
    """Where ``value`` lies between ``lo`` and ``hi`` (the table's smallest and largest non-zero
    values) on a log scale, 0..1: one large cell does not flatten all the others into one shade."""
    if value <= 0:
        return 0.0
    if not 0 < lo < hi:
        return 1.0
    return min(1.0, max(0.0, math.log(value / lo) / math.log(hi / lo)))


def percent(ratio: float) -> str:
    """A ratio as a percentage in at most 5 characters, 3 significant digits where they fit:
    0.00034 -> '0.034', 0.0123 -> '1.23', 0.5 -> '50.0', 8.5 -> '850'."""
    p = 100.0 * ratio
    if p == 0:
        return "0"
    if p < 0.0005 or p >= 999.5:
        return f"{p:.0e}".replace("e-0", "e-").replace("e+0", "e")
    return f"{p:.3f}" if p < 0.9995 else f"{p:.2f}" if p < 9.995 else f"{p:.1f}" if p < 99.95 else f"{p:.0f}"


def heat_table(norms: LayerNorms) -> RenderableType:
    """Rows = layers, columns = the wrapped module kinds, cells = 100·‖ΔW‖_F/‖W0‖_F."""
    from chatcli.lora.info import scaling_rule

    top = norms.largest()
    state = "" if norms.enabled else ", off: what it adds when on"
    state += ", merged" if norms.merged else ""
    head = Text.assemble(
        (norms.adapter, "bold cyan"),
        f": ‖ΔW‖/‖W0‖ in %, ΔW = {norms.scale:g} × {norms.scaling:.3g}·B·A ({scaling_rule(norms.rslora)}{state})",
    )
    table = Table(box=None, padding=(0, 1, 0, 0), header_style="bold", pad_edge=False)
    table.add_column("layer", justify="right", style="dim")
    for t in norms.targets:
        table.add_column(t.removesuffix("_proj"), justify="right", min_width=5)
    table.add_column("all", justify="right", style="bold")
    positive = [c.ratio for c in norms.cells if c.ratio > 0]
    lo, hi = (min(positive), max(positive)) if positive else (0.0, 0.0)
    for layer in norms.layers:
        cells = []
        for t in norms.targets:
            c = norms.cell(layer, t)
            if c is None:
                cells.append(Text("·", style="dim"))
                continue
            marked = c is top and c.ratio > 0
            cells.append(Text(percent(c.ratio) + (MARK if marked else " "),
                              style=heat_style(heat_share(c.ratio, lo, hi)) + (" bold" if marked else "")))  # fmt: skip
        table.add_row("other" if layer is None else str(layer), *cells, percent(norms.layer_ratio(layer)))
    table.add_section()
    table.add_row("all", *(percent(norms.target_ratio(t)) + " " for t in norms.targets), percent(norms.total_ratio()), style="bold")
    where = f"layer {top.layer} {top.target}" if top and top.layer is not None else top.module if top else "none"
    legend = Text(f"{MARK} max: {where} · tint: log min→max · all = √Σ‖ΔW‖²/√Σ‖W0‖²", style="dim")  # ≤ 72 columns
    return Group(head, table, legend)


def ablation_view(result: Ablation) -> RenderableType:
    """Layers ranked by the KL their adapter part causes when switched off, with bars; the total below."""
    head = Text.assemble(
        (", ".join(result.adapters), "bold cyan"),
        f": KL(all on ‖ one layer off) in bits, mean over {result.tokens} answer tokens",
    )
    table = Table(box=None, padding=(0, 1, 0, 0), header_style="bold", pad_edge=False)
    table.add_column("layer", justify="right")
    table.add_column("KL bits", justify="right")
    table.add_column("", no_wrap=True)
    table.add_column("top-1 changed", justify="right", style="dim")
    ranked = result.ranked()
    peak = max((e.kl_bits for e in ranked), default=0.0) or 1.0
    for e in ranked:
        n = e.kl_bits / peak * BAR
        bar = "█" * int(n) + (" ▏▎▍▌▋▊▉"[int((n - int(n)) * 8)] if n < BAR else "")
        table.add_row(e.label, f"{e.kl_bits:.4f}", Text(bar.rstrip(), style="#c0701a"), str(e.changed) if e.changed else "")
    total = Text.assemble(
        ("every layer off", "bold"),
        f" (no adapter): {result.total_kl_bits:.4f} bits, top-1 changed at {result.total_changed}/{result.tokens} steps",
    )
    return Group(head, table, total)


# --- /compare ------------------------------------------------------------------------------------


def kl_style(kl_bits: float) -> str:
    """Background tint for a token by KL: none below 0.01 bits, deeper up to ~2 bits."""
    if kl_bits < 0.01:
        return ""
    levels = ("#3a2f1a", "#5a3f1a", "#7a4a1a", "#9a4f1a", "#b8501a")
    i = min(len(levels) - 1, int(max(0.0, kl_bits) / 0.4))
    return f"on {levels[i]}"


def comparison_view(result, rows: int = 8) -> RenderableType:
    """The answer tinted by KL, then the steps that moved most with both distributions.

    A probability a server did not return is shown as ``<`` the smallest it did return."""
    summary = result.to_json()
    note = f"\n{result.note}" if result.note else ""
    head = Text(
        f"{', '.join(result.adapters)} vs without: mean KL {summary['mean_kl_bits']:.3f} bits over "
        f"{summary['tokens']} tokens; top choice changed at {summary['choices_changed']} step(s){note}\n",
        style="bold",
    )
    if result.no_effect:  # nothing measurable: say so, and why, under the summary
        head.append(result.no_effect + "\n", style="not bold yellow")
    body = Text()
    for s in result.steps:
        body.append(s.token, style=kl_style(s.kl_bits))
    table = Table(box=None, padding=(0, 2, 0, 0), header_style="bold", title="steps that moved most", title_justify="left")
    for col in ("#", "token", "KL bits", "p base", "p adapter", "base top (adapter)", "adapter top (base)"):
        table.add_column(col, justify="right" if col in ("#", "KL bits", "p base", "p adapter") else "left")
    for s in sorted(result.steps, key=lambda s: -s.kl_bits)[:rows]:
        by_base = sorted((t for t in s.top if t.p_base is not None), key=lambda t: -t.p_base)[:3]
        by_adapter = sorted((t for t in s.top if t.p_adapter is not None), key=lambda t: -t.p_adapter)[:3]
        table.add_row(
            str(s.index), repr(s.token), ("≥" if result.partial else "") + f"{s.kl_bits:.3f}",
            probability(s.p_base, s.base_floor), probability(s.p_adapter, s.adapter_floor),
            "  ".join(f"{t.token!r} {t.p_base:.3f} ({probability(t.p_adapter, s.adapter_floor)})" for t in by_base),
            "  ".join(f"{t.token!r} {t.p_adapter:.3f} ({probability(t.p_base, s.base_floor)})" for t in by_adapter),
        )  # fmt: skip
    return Group(head, body, Text(""), table)


def probability(p: float | None, floor: float | None, digits: int = 3) -> str:
    """``0.123``; a probability the server did not return: ``<0.055`` (below the smallest it did)."""
    if p is not None:
        return f"{p:.{digits}f}"
    if floor is None:
        return "?"
    return f"<{math.ceil(floor * 10**digits) / 10**digits:.{digits}f}"  # rounded up: still a bound
