"""What the probability panel shows for a token of a ``/compare``d answer: base vs adapter, side by side.

Pure rendering helpers (no widgets): :func:`shift_summary` (where, the chosen
token's probability without and with the adapter(s) and its shift, KL in bits,
whether the top choice changed), :func:`shift_rows` (the union of both top
lists, each row with a base bar and an adapter bar) and :func:`kl_legend` (the
tint scale). The panel puts them in its summary, option list and legend; the
rows' ids are ``pair-N`` (index into ``TokenShift.top``) so choosing one can
branch the answer with that token like any alternative.

A remote server's comparison knows only the alternatives each side returned: a
probability one side did not return is shown as "< floor" (below the smallest that
side returned at that step) with an empty bar, never as a number, and its KL as a
lower bound ("≥").
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from textual.content import Content
from textual.style import Style
from textual.widgets.option_list import Option

from chatcli.tui.token_text import KL_FULL_BITS, KL_MIN_BITS, bar, kl_color, kl_fraction, percent, visible

if TYPE_CHECKING:
    from chatcli.lora.compare import TokenShift

TOKEN_WIDTH = 12


def _label(text: str, width: int = TOKEN_WIDTH) -> str:
    label = visible(text)
    return label if len(label) <= width else label[: width - 1] + "…"


def _kl_swatch(kl_bits: float, text: str) -> tuple[str, Style | str]:
    color = kl_color(kl_bits)
    return (text, Style(background=color, bold=True) if color is not None else "$text-muted")


def bounded(p: float | None, floor: float | None) -> str:
    """A probability as a percentage; one the server did not return: ``<`` the smallest it did."""
    if p is not None:
        return percent(p)
    if floor is None:
        return "–"
    pct = floor * 100
    digits = 1 if pct >= 9.95 else 2  # as percent() shows it, rounded up so it stays a bound
    up = math.ceil(pct * 10**digits - 1e-9) / 10**digits
    return "<100%" if up >= 99.95 else f"<{up:.{digits}f}%"


def _partial(shift: TokenShift) -> bool:
    return shift.base_floor is not None or shift.adapter_floor is not None


def shift_summary(shift: TokenShift, *, index: int, total: int, adapters: tuple[str, ...]) -> Content:
    """Four lines: step and adapters; chosen token; its probability base → adapter; KL and top choices."""
    where = Content.assemble(
        ("step ", "$text-muted"), (f"{index + 1}", "bold"), (f" of {total}", "$text-muted"),
        ("   with vs without ", "$text-muted"), (", ".join(adapters), "bold $secondary"),
    )  # fmt: skip
    chosen = Content.assemble(("chosen ", "$text-muted"), (visible(shift.token), "bold reverse"), (f"  id {shift.id}", "$text-muted"))
    delta = shift.shift * 100 if shift.shift is not None else None
    probs = Content.assemble(
        ("base ", "$text-muted"), (bounded(shift.p_base, shift.base_floor), "bold"), (" → adapter ", "$text-muted"),
        (bounded(shift.p_adapter, shift.adapter_floor), "bold"),
        ("  (not returned: unknown)", "$text-muted") if delta is None else
        (f"  {delta:+.1f} pts", "$success" if delta > 0.05 else "$error" if delta < -0.05 else "$text-muted"),
    )  # fmt: skip
    by_id = {t.id: t.token for t in shift.top}
    kl = Content.assemble(
        ("KL ", "$text-muted"), _kl_swatch(shift.kl_bits, f"{'≥' if _partial(shift) else ''}{shift.kl_bits:.3f} bits"), " ",
        (bar(kl_fraction(shift.kl_bits), 8), "$secondary"),
    )  # fmt: skip
    if shift.choice_changed:
        kl = kl + Content.assemble(
            ("  top ", "$text-muted"), (visible(by_id.get(shift.base_top1, str(shift.base_top1))), "bold"),
            (" → ", "$text-muted"), (visible(by_id.get(shift.adapter_top1, str(shift.adapter_top1))), "bold"),
        )  # fmt: skip
    else:
        kl = kl + Content.styled("  same top choice", "$text-muted")
    return Content("\n").join([where, chosen, probs, kl])


def shift_rows(shift: TokenShift, width: int) -> list[Option]:
    """One option per token of either top list: ▶ marks the chosen one; base bar, then adapter bar."""
    width = max(24, width)
    bar_w = max(4, (width - TOKEN_WIDTH - 4 - 14) // 2)
    top = max((p for t in shift.top for p in (t.p_base, t.p_adapter) if p is not None), default=1.0) or 1.0
    rows: list[Option] = []
    for i, t in enumerate(shift.top):
        chosen = t.id == shift.id
        up = t.p_adapter is not None and t.p_base is not None and t.p_adapter > t.p_base
        base_bar = bar(t.p_base / top if t.p_base is not None else float("nan"), bar_w)  # unknown: empty
        adapter_bar = bar(t.p_adapter / top if t.p_adapter is not None else float("nan"), bar_w)
        rows.append(Option(Content.assemble(
            ("▶", "bold $accent") if chosen else " ", (f"{i + 1}", "$text-muted"), " ",
            (_label(t.token).ljust(TOKEN_WIDTH), "bold" if chosen else ""),
            " ", (base_bar, "$primary"), (bounded(t.p_base, shift.base_floor).rjust(6), ""),
            " ", (adapter_bar, "$success" if up else "$warning"),
            (bounded(t.p_adapter, shift.adapter_floor).rjust(6), "bold" if chosen else ""),
        ), id=f"pair-{i}"))  # fmt: skip
    if not any(t.id == shift.id for t in shift.top):
        rows.append(Option(Content.assemble(
            ("▶", "bold $accent"), ("… ", "$text-muted"), (_label(shift.token).ljust(TOKEN_WIDTH), "bold"),
            (f" {bounded(shift.p_base, shift.base_floor)} → {bounded(shift.p_adapter, shift.adapter_floor)} "
             "(below both top lists)", "$text-muted"),
        ), id="pair-chosen", disabled=True))  # fmt: skip
    return rows


def kl_legend() -> Content:
    """The KL tint scale and what the two bars are, for the panel's legend."""
    marks = [KL_MIN_BITS, 0.1, 0.5, KL_FULL_BITS]
    parts: list = [("tint: KL(adapter‖base) in bits\n", "$text-muted")]
    for k in marks:
        parts += [_kl_swatch(k, f" {k:g}{'+' if k == KL_FULL_BITS else ''} "), " "]
    parts += [("\nbars: base (left) · adapter (right)\nEsc or F2: normal tint · Enter: branch", "$text-muted")]
    return Content.assemble(*parts)


def comparison_note(comparison) -> Content:
    """The transcript's one-line account of a /compare shown in place (the tokens carry the detail)."""
    summary = comparison.to_json()
    top = comparison.max_step
    parts: list = [
        (", ".join(comparison.adapters), "bold $secondary"), (" vs without: mean KL ", "$text-muted"),
        (f"{summary['mean_kl_bits']:.3f} bits", "bold"), (f" over {summary['tokens']} tokens · top choice changed at ", "$text-muted"),
        (str(summary["choices_changed"]), "bold"), (" step(s)", "$text-muted"),
    ]  # fmt: skip
    if top is not None:
        parts += [(" · most at token ", "$text-muted"), (f"{top.index + 1} {visible(top.token)!r}", "bold"),
                  (f" ({top.kl_bits:.3f} bits)", "$text-muted")]  # fmt: skip
    if comparison.note:
        parts += [("\n" + comparison.note, "$text-muted")]
    if comparison.no_effect:  # nothing measurable: say so, and why
        parts += [("\n" + comparison.no_effect, "$warning")]
    parts += [("\nthe answer is tinted by KL; select its tokens to see both distributions · Esc or F2: normal tint", "$text-muted")]
    return Content.assemble(*parts)
