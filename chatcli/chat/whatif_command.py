"""``/whatif``: one step of an answer re-formed under other sampling settings, without regenerating.

    /whatif                                   the selected step (TUI) or the last answer's last step
    /whatif temperature 1.5 top_p 0.9         ... under those settings (names and aliases as /set)
    /whatif step 4 t 0 k 5                    step 4 (counted from 1) of that answer
    /whatif scale 0.5                         the first generation adapter at scale 0.5 (re-scores the step)

The step's logits come from re-running the model over the exact ids the step was
predicted from (:func:`chatcli.chat.step_context.step_prefix`), with the adapters the
answer was made with at the scales it was made with (:func:`step_logits_for`); they are
re-formed by :func:`chatcli.engine.probes.whatif.what_if`, which samples' own rules shape,
so the answer's own settings give back the probability each step recorded. The plain
REPL prints a table; a front end with ``panel_views`` (the TUI) opens its what-if view on
the step instead, with the settings given. Pieces the TUI's view shares:
:func:`answer_params`, :func:`tuned_adapter`, :func:`step_logits_for`, :func:`settings_items`,
:func:`cut_line`, :data:`SOFTMAX_LINE`.

A server is refused with one line: it returns no logits to re-form.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.cells import cell_len
from rich.console import Group, RenderableType
from rich.text import Text

from chatcli.chat.answer_record import recorded_adapters
from chatcli.chat.commands import Arg, Command, CommandContext, Registry
from chatcli.chat.params import parse_param_value, resolve_param
from chatcli.chat.step_context import require_local, step_prefix
from chatcli.engine.params import SamplingParams
from chatcli.errors import ChatcliError, UsageError

if TYPE_CHECKING:
    import torch

    from chatcli.engine.probes.whatif import WhatIf

WHAT = "what-if on a step"
SAMPLING_KEYS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")
SOFTMAX_LINE = "prob = exp(logit/T) / Σ over the kept tokens"
PENALTY_LINE = "(seen tokens' logits ÷ rep first)"
SHOWN = 10  # rows of the printed table


# --- what the answer was made with -----------------------------------------------------------


def answer_params(node: Any) -> SamplingParams:
    """The sampling settings ``node`` was generated with (recorded in its meta); a value this
    version refuses keeps its default. An answer without a record: the defaults."""
    recorded = node.meta.get("params")
    good: dict[str, Any] = {}
    if isinstance(recorded, dict):
        for key in SAMPLING_KEYS:
            if key in recorded:
                try:
                    SamplingParams(**{key: recorded[key]})
                except (ChatcliError, TypeError, ValueError):
                    continue
                good[key] = recorded[key]
    return SamplingParams(**good)


def _generation_adapters(engine: Any) -> list[str]:
    from chatcli.lora.compare import is_reward_model

    manager = engine.adapters
    return [n for n in manager.names if not is_reward_model(manager, n)]


def tuned_adapter(core: Any, node: Any) -> tuple[str, float] | None:
    """The adapter the what-if scale changes and its scale in the answer: the first generation
    adapter the answer was made with that is still loaded, else the first loaded one (scale 0
    when it was off for the answer, or as it is now when the answer recorded nothing); None
    when no generation adapter is loaded."""
    names = _generation_adapters(core.engine)
    if not names:
        return None
    recorded = recorded_adapters(node.meta)
    if recorded is None:  # not recorded: the adapters as they are now
        manager = core.engine.adapters
        active = [n for n in names if n in manager.active_names()]
        name = (active or names)[0]
        return name, float(manager.info(name).scale) if active else 0.0
    for name, scale in recorded.items():
        if name in names:
            return name, scale
    return names[0], 0.0


@dataclass(frozen=True)
class StepLogits:
    """One step's logits, re-scored: what every what-if of that step re-forms."""

    logits: torch.Tensor  # [V] float32
    prefix: list[int]  # the ids the step was predicted from (the repetition penalty counts them)
    adapter: str | None  # the adapter whose scale was set (None: none loaded)
    scale: float | None  # its scale for these logits
    note: str = ""  # why these logits may differ from the answer's (an adapter unloaded since)


def local_engine(core: Any) -> Any:
    engine = core.engine
    if engine is None:
        raise ChatcliError("the model is still loading; try again in a moment")
    require_local(engine, WHAT)
    if getattr(engine, "model", None) is None:
        raise UsageError(f"{WHAT} needs chatcli's own PyTorch engine; this engine has no local model")
    return engine


def step_logits_for(core: Any, node: Any, index: int, *, scale: float | None = None) -> StepLogits:
    """Re-score step ``index`` of ``node`` with the adapters the answer was made with, at its scales
    (the adapter of :func:`tuned_adapter` at ``scale`` when given). Runs the model: call it off the
    UI thread. Refused while an answer streams (the manager's guard)."""
    from chatcli.engine.probes.whatif import logits_at_scales, step_logits

    engine = local_engine(core)
    if node.status == "streaming":
        raise UsageError("the answer is still being written; what-if works on finished steps")
    prefix = step_prefix(core, node, index)
    manager = engine.adapters
    tuned = tuned_adapter(core, node)
    adapter = tuned[0] if tuned else None
    used = (scale if scale is not None else tuned[1]) if tuned else None
    recorded = recorded_adapters(node.meta)
    note = ""
    if recorded is None:  # nothing recorded: the adapters as they are now (the tuned one at ``scale``)
        scales = {adapter: used} if adapter is not None and scale is not None else {}
        off: list[str] = []
    else:
        scales = {n: s for n, s in recorded.items() if n in manager.names}
        missing = [n for n in recorded if n not in manager.names]
        if missing:
            note = f"{', '.join(missing)} made this answer but is not loaded now: re-scored without it"
        if adapter is not None:
            scales[adapter] = used
        off = [n for n in manager.names if n not in scales]
    now = {i.name: i.scale for i in manager.list() if i.enabled and i.scale != 0.0}
    wanted = {**now, **scales} if recorded is None else {n: s for n, s in scales.items() if s != 0.0}
    if {n: s for n, s in wanted.items() if s != 0.0} == now:
        with manager.guarded():  # the adapters are as the step needs them: no switch, the KV cache stays
            logits = step_logits(engine.model, prefix)
    else:
        logits = logits_at_scales(engine.model, manager, prefix, scales, off=off)
    return StepLogits(logits, prefix, adapter, used, note)


# --- settings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class WhatIfRequest:
    """What ``/whatif`` was asked: the settings to try, a step (from 1) and an adapter scale."""

    changes: dict[str, Any]
    step: int | None = None
    scale: float | None = None


def parse_request(text: str | None) -> WhatIfRequest:
    """``SETTING VALUE ...`` pairs: the sampling settings of /set (aliases too), ``step N``, ``scale S``."""
    words = (text or "").split()
    if len(words) % 2:
        raise UsageError(f"{words[-1]!r} needs a value: /whatif [step N] [SETTING VALUE ...], e.g. /whatif temperature 1.5")
    changes: dict[str, Any] = {}
    step = scale = None
    for name, value in zip(words[::2], words[1::2]):
        low = name.lower()
        if low == "step":
            try:
                step = int(value)
            except ValueError:
                raise UsageError(f"/whatif step N needs a step number, not {value!r}") from None
            continue
        if low in ("scale", "lora_scale", "lora-scale"):
            try:
                scale = float(value)
            except ValueError:
                raise UsageError(f"invalid scale {value!r}: use a number, e.g. /whatif scale 0.5") from None
            continue
        key = resolve_param(name)
        if key not in SAMPLING_KEYS:
            raise UsageError(f"/whatif changes {', '.join(SAMPLING_KEYS)} and scale, not {key}")
        changes[key] = parse_param_value(key, value)
    return WhatIfRequest(changes, step, scale)


def settings_items(params: SamplingParams, answer: SamplingParams) -> list[tuple[str, bool]]:
    """The five sampling settings as short texts, each with whether it differs from the answer's
    (then the answer's value follows in brackets): ``("T 1.5 (0.7)", True)``."""

    def show(key: str, p: SamplingParams) -> str:
        v = getattr(p, key)
        if key == "temperature":
            return f"{v:g}" + (" greedy" if v == 0 else "")
        off = {"top_k": 0, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0}[key]
        return "off" if v == off else f"{v:g}"

    labels = {"temperature": "T", "top_k": "top-k", "top_p": "top-p", "min_p": "min-p", "repetition_penalty": "rep"}
    out = []
    for key in SAMPLING_KEYS:
        now, then = show(key, params), show(key, answer)
        changed = getattr(params, key) != getattr(answer, key)
        out.append((f"{labels[key]} {now}" + (f" ({then})" if changed else ""), changed))
    return out


def cut_line(cut: str, params: SamplingParams) -> str:
    """What a filter's line says where it starts cutting."""
    if cut == "top-k":
        return f"top-k {params.top_k} cuts here"
    if cut == "top-p":
        return f"top-p {params.top_p:g} cuts here"
    if cut == "min-p":
        return f"min-p {params.min_p:g} cuts here"
    return "T 0: only the top token"


def pct(p: float) -> str:
    if p >= 0.9995:
        return "100%"
    if p >= 0.0995:
        return f"{p * 100:.1f}%"
    if p >= 0.0001:
        return f"{p * 100:.2f}%"
    return "<0.01%" if p > 0 else "0"


def token_label(token: str, width: int) -> str:
    text = repr(token)
    return text if len(text) <= width else text[: width - 1] + "…"


def escape_controls(text: str) -> str:
    """Control and format characters (a byte token such as '\\x0b') as Python escapes: a terminal
    would act on them or draw nothing, and the columns after them would slip."""
    return "".join(repr(c)[1:-1] if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") else c for c in text)


def fit_cells(text: str, width: int) -> str:
    """``text`` cut (with …) or padded to exactly ``width`` terminal cells (a CJK character takes two)."""
    if cell_len(text) > width:
        while text and cell_len(text) > width - 1:
            text = text[:-1]
        text += "…"
    return text + " " * (width - cell_len(text))


# --- the printed table -----------------------------------------------------------------------


def whatif_table(w: WhatIf, *, answer: SamplingParams, title: str, chosen: int | None = None,
                 adapter_line: str = "") -> RenderableType:  # fmt: skip
    """The what-if of one step as text for the plain REPL (fits 80 columns)."""
    settings = Text()
    for i, (item, changed) in enumerate(settings_items(w.params, answer)):
        settings.append(("  " if i else "") + item, style="bold" if changed else "")
    lines: list[RenderableType] = [
        Text.assemble(("what-if: ", "bold"), (title, "bold")),
        settings,
        Text(f"kept {w.kept} · entropy {w.entropy_model:.2f} bits (model) → {w.entropy_sampled:.2f} (sampled)", style="dim"),
    ]
    if adapter_line:
        lines.append(Text(adapter_line))
    lines.append(Text(f"  {'token':<14}{'logit':>7}  {'model':<16}  {'sampled':<16}", style="bold"))
    top = max([r.model_prob for r in w.rows] + [r.prob for r in w.rows] + [1e-9])  # one scale for both bars
    previous: str | None = None
    for r in w.rows:
        if r.cut is not None and r.cut != previous:
            lines.append(Text(f"  ── {cut_line(r.cut, w.params)} ──", style="yellow"))
        previous = r.cut
        mark = "▶" if r.id == chosen else " "
        sampled = f"{_bar(r.prob / top, 8)} {pct(r.prob):>7}" if r.cut is None else f"{'':8} {'✂ ' + r.cut:>7}"
        lines.append(Text(f"{mark} {fit_cells(token_label(r.token, 14), 14)}{r.logit:>7.2f}  {_bar(r.model_prob / top, 8)} "
                          f"{pct(r.model_prob):>7}  {sampled}", style="bold" if r.id == chosen else ""))  # fmt: skip
    lines.append(Text(f"  {'outside the ' + str(len(w.rows)) + ' shown':<21}  {'':8} {pct(w.outside_model_mass):>7}"
                      f"  {'':8} {pct(w.outside_prob_mass):>7}", style="dim"))  # fmt: skip
    penalty = " " + PENALTY_LINE if w.params.repetition_penalty != 1.0 else ""
    lines.append(Text(SOFTMAX_LINE + penalty, style="dim"))
    return Group(*lines)


def _bar(fraction: float, width: int) -> str:
    fraction = 0.0 if fraction != fraction else max(0.0, min(1.0, fraction))
    full, rest = divmod(round(fraction * width * 8), 8)
    return ("█" * full + (" ▏▎▍▌▋▊▉"[rest] if rest else "")).ljust(width)


def adapter_shift(adapter: str, scale: float, answer_scale: float, chosen_token: str,
                  p_answer: float, p_now: float) -> str:  # fmt: skip
    """One line: the adapter at another scale, and how the chosen token's model probability moved."""
    return (f"adapter {adapter} at scale {scale:g} (answer {answer_scale:g}): model p({token_label(chosen_token, 14)}) "
            f"{pct(p_answer)} → {pct(p_now)}")  # fmt: skip


# --- the command -----------------------------------------------------------------------------


def _answer(ctx: CommandContext) -> tuple[Any, int | None]:
    """The answer (the selected one in a front end with panel views, else the last) and its selected step."""
    selected = ctx.selected_step() if ctx.frontend.panel_views else None
    if selected is not None:
        return selected
    for node in reversed(ctx.core.conv.path()):
        if node.role == "assistant" and node.steps:
            return node, None
    raise UsageError("no answer yet: send a message first, then /whatif re-forms its steps")


def whatif(ctx: CommandContext, text: str | None = None) -> None:
    engine = local_engine(ctx.core)
    request = parse_request(text)
    node, selected = _answer(ctx)
    if request.step is not None and not 1 <= request.step <= len(node.steps):
        raise UsageError(f"no step {request.step} in this answer: it has steps 1 to {len(node.steps)}")
    index = request.step - 1 if request.step is not None else selected if selected is not None else len(node.steps) - 1
    answer = answer_params(node)
    params = answer.with_(**request.changes)
    if request.scale is not None and tuned_adapter(ctx.core, node) is None:
        raise UsageError("no adapter is loaded to scale: /load-lora one first")
    if ctx.frontend.panel_views:
        ctx.show_view("what-if", node, index, params=params, scale=request.scale)
        return
    ctx.say(whatif_report(ctx.core, node, index, params, scale=request.scale, tokenizer=engine.tokenizer), "result")


def whatif_report(core: Any, node: Any, index: int, params: SamplingParams, *, scale: float | None = None,
                  tokenizer: Any = None) -> RenderableType:  # fmt: skip
    """The printed what-if of step ``index`` of ``node`` under ``params`` (the adapter at ``scale``)."""
    from chatcli.engine.probes.whatif import what_if
    from chatcli.engine.sampling import raw_distribution

    step = node.steps[index]
    got = step_logits_for(core, node, index, scale=scale)
    w = what_if(got.logits, params, got.prefix, tokenizer, top_n=SHOWN, include=[step.id])
    adapter_line = got.note
    if scale is not None and got.adapter is not None:
        answer_scale = tuned_adapter(core, node)[1]
        before = step_logits_for(core, node, index)
        p_answer = float(raw_distribution(before.logits)[step.id])
        row = w.row(step.id)
        adapter_line = adapter_shift(got.adapter, scale, answer_scale, step.token, p_answer, row.model_prob if row else 0.0)
    title = f"step {index + 1} of {len(node.steps)}, chose {token_label(step.token, 20)} (recorded: model {pct(step.model_prob)}, sampled {pct(step.prob)})"
    return whatif_table(w, answer=answer_params(node), title=title, chosen=step.id, adapter_line=adapter_line)


COMMANDS = (
    Command("whatif", whatif, "re-form a step under other settings without regenerating: /whatif [step N] [temperature 1.5 top_p 0.9 ... scale S]",
            (Arg("text", "text", optional=True, help="[step N] SETTING VALUE ... (temperature, top_k, top_p, min_p, "
                 "repetition_penalty, scale)"),), aliases=("what-if",)),
)  # fmt: skip


def install(registry: Registry) -> list[str]:
    """Add /whatif to ``registry`` (left as it is when already there)."""
    added = []
    for c in COMMANDS:
        if registry.get(c.name) is c:
            continue
        registry.add(c)
        added.append(c.name)
    return added
