"""What the status bar says, field by field, and which fields give way when the bar is narrow.

:func:`status_fields` turns a :class:`StatusInfo` into :class:`Field`\\ s in display
order, each in a zone (left: the chat; middle: a hint and the plugins' items; right:
context, speed, history) and with a rank: 0 always shows, and when the bar is too
narrow :func:`fit` drops the highest ranks first. The state and the model name never
go; dtype/device, the history id, the speed and the context use go first; the sampling
settings and the active adapters hold longer, and where the shown sampling values came from
("(model: T top-p)": only sources other than a flag or the built-in default are named) outlasts
max/seed; a hint and a plugin's item (a running fine-tune and its F8 offer) go last, and are
shortened with "…" rather than dropped.
Pure functions: no widgets, so the rules are tested without a screen.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from textual.content import Content

from chatcli.engine.params import SamplingParams
from chatcli.engine.protocol import ModelIdentity
from chatcli.tui.token_text import bar

STATE_STYLE = {
    "ready": "$success", "writing": "$accent", "ranking": "$accent", "stopping": "$warning", "loading": "$warning",
    "no model": "$error",
}

ZONE_GAP = 2  # columns between the zones (the middle and right zones' left margin)
MIN_SHRUNK = 12  # a shortened hint or plugin item keeps at least this many columns, or goes


@dataclass
class StatusInfo:
    state: str = "loading"  # "loading" | "ready" | "writing" | "ranking" (/rank generating) | "stopping" | "no model"
    model: str = ""
    identity: ModelIdentity | None = None
    params: SamplingParams | None = None
    sources: dict[str, str] = field(default_factory=dict)  # param -> the layer its value came from (param_sources)
    context: tuple[int, int] | None = None  # (used, length)
    tokens_per_s: float | None = None
    live_tokens: int = 0
    conv_id: int | None = None
    saving: bool = True
    tint: str = "off"
    adapters: str = ""  # "lora: sft×0.5, dpo (merged)", or "" for none
    plugin: str = ""  # the plugins' live status items, joined
    action: str | None = None  # the slash command F8 runs (offered by a plugin item), if any
    hint: str = ""  # a passing one-line hint ("no more uncertain tokens after this one")


@dataclass(frozen=True)
class Field:
    zone: str  # "left" | "middle" | "right"
    rank: int  # 0: always shown; the highest ranks are dropped first
    content: Content
    shrink: bool = False  # may be shortened with "…" instead of dropped

    @property
    def width(self) -> int:
        return self.content.cell_length


# The ranks, lowest (kept longest) first.
(KEEP, HINT, PLUGIN, ADAPTERS, TEMPERATURE, FILTERS, SOURCES, LENGTH, NOT_SAVED, NO_ADAPTERS, CONTEXT, SPEED, HISTORY,
 PRECISION) = range(14)
# Sources the bar names: where a value came from without being typed on this command line.
TAGGED = ("/set", "preset", "env", "config", "model")


def _fmt_k(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 10_000 else f"{n:,}"


def status_fields(info: StatusInfo) -> list[Field]:
    """Every field the bar would show with room enough, in display order."""
    return [*_left(info), *_middle(info), *_right(info)]


def _left(info: StatusInfo) -> list[Field]:
    state = info.state + (f" {info.live_tokens}" if info.state == "writing" and info.live_tokens else "")
    style = STATE_STYLE.get(info.state, "")
    ident = info.identity
    out = [Field("left", KEEP, Content.assemble(("● ", style), (state, f"bold {style}"), "  ",
                                                (ident.name if ident else info.model or "…", "bold")))]  # fmt: skip
    if ident is not None:
        out.append(Field("left", PRECISION, Content.styled(f" {ident.precision}/{ident.device}", "$text-muted")))
    p = info.params
    if p is not None:
        # Temperature always (it leads the group, so it carries the separator); the filters only while on.
        out.append(Field("left", TEMPERATURE, _pairs([("T", "greedy" if p.greedy else f"{p.temperature:g}")], lead="  │")))
        filters = []
        if p.top_k:
            filters.append(("top-k", str(p.top_k)))
        if p.top_p < 1:
            filters.append(("top-p", f"{p.top_p:g}"))
        if p.min_p > 0:
            filters.append(("min-p", f"{p.min_p:g}"))
        if p.repetition_penalty != 1:
            filters.append(("rep", f"{p.repetition_penalty:g}"))
        if filters:
            out.append(Field("left", FILTERS, _pairs(filters)))
        tag = _sources_tag(["T", *(name for name, _ in filters)], info.sources)
        if tag:
            out.append(Field("left", SOURCES, tag))
        out.append(Field("left", LENGTH, _pairs([("max", str(p.max_tokens)), ("seed", "random" if p.seed is None else str(p.seed))])))
    if info.adapters:
        out.append(Field("left", ADAPTERS, Content.assemble(("  │ ", "$text-muted"), (info.adapters, "bold $secondary"))))
    else:
        out.append(Field("left", NO_ADAPTERS, Content.assemble(("  │ adapters ", "$text-muted"), ("none", ""))))
    return out


_PARAM_OF_LABEL = {"T": "temperature", "top-k": "top_k", "top-p": "top_p", "min-p": "min_p", "rep": "repetition_penalty"}


def _sources_tag(labels: list[str], sources: dict[str, str]) -> Content | None:
    """`` (model: T top-p · /set: top-k)``: where the shown values came from, when not from a flag or built in."""
    groups: dict[str, list[str]] = {}
    for label in labels:
        source = sources.get(_PARAM_OF_LABEL[label], "built-in")
        if source in TAGGED:
            groups.setdefault(source, []).append(label)
    if not groups:
        return None
    parts: list = [(" (", "$text-muted")]
    for i, (source, names) in enumerate(groups.items()):
        parts += [(" · " if i else "", "$text-muted"), (source, "italic $secondary"),
                  (f": {' '.join(names)}", "$text-muted")]
    return Content.assemble(*parts, (")", "$text-muted"))


def _pairs(items: list[tuple[str, str]], lead: str = "") -> Content:
    parts: list = [(lead, "$text-muted")] if lead else []
    for k, v in items:
        parts += [(f" {k} ", "$text-muted"), (v, "")]
    return Content.assemble(*parts)


def _middle(info: StatusInfo) -> list[Field]:
    out = []
    if info.hint:
        out.append(Field("middle", HINT, Content.styled(info.hint, "bold $warning"), shrink=True))
    if info.plugin:
        lead = "  ·  " if info.hint else ""
        out.append(Field("middle", PLUGIN, Content.assemble((lead, "$text-muted"), (info.plugin, "$warning")), shrink=True))
    if info.action:
        out.append(Field("middle", PLUGIN, Content.assemble(("  F8", "bold $accent"), (f" {info.action}", "$text-muted"))))
    return out


def _right(info: StatusInfo) -> list[Field]:
    out = []
    if info.context is not None:
        used, total = info.context
        frac = used / total if total else 0
        style = "$error" if frac > 0.9 else "$warning" if frac > 0.7 else "$primary"
        out.append(Field("right", CONTEXT, Content.assemble(("ctx ", "$text-muted"), (f"{_fmt_k(used)}/{_fmt_k(total)} ", ""),
                                                            (bar(frac, 6), style), "  ")))  # fmt: skip
    if info.tokens_per_s:
        out.append(Field("right", SPEED, Content.assemble((f"{info.tokens_per_s:.1f}", "bold"), (" tok/s  ", "$text-muted"))))
    if not info.saving:
        out.append(Field("right", NOT_SAVED, Content.styled("not saved", "$warning")))
    elif info.conv_id is not None:
        out.append(Field("right", HISTORY, Content.assemble(("#", "$text-muted"), (str(info.conv_id), ""))))
    return out


def needed_width(fields: list[Field]) -> int:
    """Columns the fields take, with the gaps between the zones that have any."""
    total = 0
    for zone in ("left", "middle", "right"):
        width = sum(f.width for f in fields if f.zone == zone)
        if width:
            total += width + (ZONE_GAP if zone != "left" else 0)
    return total


def fit(fields: list[Field], width: int) -> list[Field]:
    """The fields that fit in ``width`` columns (0: unknown yet, all of them).

    Fields go from the highest rank down until the rest fits. Within a rank a
    shrinkable field (a hint, a plugin's text) is first shortened with "…" if that is
    enough, else it goes before the others (an F8 offer outlives its plugin's text);
    then the rightmost goes. Rank 0 always stays; if even that is too wide, the bar's
    own ellipsis cuts it.
    """
    kept = list(fields)
    if width <= 0:
        return kept
    while (excess := needed_width(kept) - width) > 0:
        droppable = [f for f in kept if f.rank > 0]
        if not droppable:
            break
        worst = max(f.rank for f in droppable)
        same = [f for f in droppable if f.rank == worst]
        shrinkable = [f for f in same if f.shrink]
        target = next((f for f in shrinkable if f.width - excess >= MIN_SHRUNK), None)
        if target is not None:
            short = target.content.truncate(target.width - excess, ellipsis=True)
            kept[kept.index(target)] = replace(target, content=short, shrink=False)
            continue
        kept.remove(shrinkable[0] if shrinkable else same[-1])
    return kept


def zone_content(fields: list[Field], zone: str) -> Content:
    return Content.assemble(*[f.content for f in fields if f.zone == zone])
