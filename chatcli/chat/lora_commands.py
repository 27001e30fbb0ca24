"""The adapter slash commands, shared by the TUI and the plain REPL.

``install(registry)`` adds them to a :class:`chatcli.chat.commands.Registry` (idempotent):

    /load-lora PATH[:SCALE] [--name N] [--scale S]   /unload-lora N   /lora [N]
    /lora-scale N S   /lora-on N   /lora-off N   /merge N   /unmerge N   /compare [N]
    /lora-layers [N]

They act on the engine's adapters (``engine.adapters``: the
:class:`~chatcli.lora.manager.AdapterManager` built with a local engine, a server's
adapter control on a remote one): changes wait for no answer
(``idle_only``, and the engine's own lock) and reset the KV cache. ``/compare``
re-scores the last answer with and without exactly the adapters that made it, at
the scales they had (recorded with the answer, :mod:`chatcli.chat.answer_record`;
``/compare NAME``: that adapter at its scale now); a reward model is never part of
it. A front end that declares ``inline_compare`` (:class:`chatcli.chat.frontend.FrontEnd`)
tints its transcript with a comparison of the answer's own tokens, others (and a
server's comparison of two new answers) get a tinted copy and the steps that moved
most; a probability a server did not return is shown as "< the smallest it did".
``/lora`` adds each adapter's ‖ΔW‖/‖W0‖ heat table (:mod:`chatcli.lora.layer_norms`,
drawn by :mod:`chatcli.chat.lora_views`); ``/lora-layers`` ranks the layers by the KL
that switching the adapter off there alone causes on the last answer
(:mod:`chatcli.lora.ablation`; the same adapters and scales as ``/compare``), on a
background thread where the front end owns its widgets on one; both need the weights
in this process (one line on a server).
``/load-lora`` with no argument opens the front end's adapter picker where it
declares ``screens``, and is a usage error otherwise. A loaded adapter is announced
to the chat core's listeners (the ``adapter_loaded`` plugin hook). An adapter that
changes nothing measurable (mean KL < 0.001 bits) is said in one line with the likely
reason: under ``/compare``'s summary, and after ``/load-lora`` and ``/lora-scale`` by a
check of the last answer (:func:`check_effect`, in the background in the TUI).

:func:`status_text` is the short active-adapter summary for a status bar.
"""

from __future__ import annotations

import math
import os
import shlex
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from chatcli.chat.commands import Arg, Command, CommandContext, Registry
from chatcli.engine.protocol import capabilities
from chatcli.errors import ChatcliError, UsageError


def _manager(ctx: CommandContext):
    engine = ctx.core.engine
    if engine is None:
        raise ChatcliError("the model is still loading; try again in a moment")
    caps = capabilities(engine)
    if not caps.weights_in_process:  # a server: its own adapter control (same verbs), if it has one
        control = getattr(engine, "adapters", None)
        if control is None:
            raise UsageError(f"{caps.unsupported('adapter control')}: this server offers no LoRA endpoints")
        return control
    mgr = getattr(engine, "adapters", None)  # LoadedModel.adapters, built with the engine
    if mgr is None:
        raise UsageError("adapters need chatcli's own PyTorch engine; this engine has no local model")
    return mgr


def _loaded(ctx: CommandContext):
    mgr = _manager(ctx)
    if len(mgr) == 0:
        raise UsageError("no adapter is loaded: /load-lora PATH loads one")
    return mgr


def _float(text: str, what: str) -> float:
    from chatcli.lora.manager import check_scale

    try:
        return check_scale(text)
    except UsageError:
        raise UsageError(f"{what} must be a finite number, not {text!r}") from None


# --- commands ----------------------------------------------------------------------------------


def load_lora(ctx: CommandContext, path: str | None = None) -> None:
    from chatcli.lora.spec import resolve_adapter

    usage = "usage: /load-lora PATH[:SCALE] [--name N] [--scale S]"
    try:
        words = shlex.split(path or "", posix=os.name != "nt")  # keep Windows backslashes
    except ValueError as e:
        raise UsageError(f"/load-lora: {e}; {usage}") from None
    path, name, scale = None, None, None  # ``path`` now the adapter argument alone
    it = iter(words)
    for w in it:
        if w in ("--name", "--scale"):
            value = next(it, None)
            if value is None:
                raise UsageError(f"/load-lora: {w} needs a value; {usage}")
            if w == "--name":
                name = value
            else:
                scale = _float(value, "--scale")
        elif w.startswith("--"):
            raise UsageError(f"/load-lora: unknown option {w}; {usage}")
        elif path is None:
            path = w
        else:
            raise UsageError(f"/load-lora: one adapter at a time; {usage}")
    if path is None:
        if ctx.frontend.screens and not words:  # a front end with screens offers the known adapters in a picker
            ctx.pick_adapter()
            return
        raise UsageError(f"/load-lora needs PATH; {usage}")
    mgr = _manager(ctx)
    spec = getattr(mgr, "resolve", resolve_adapter)(path)  # a server resolves paths on its own disk
    info = mgr.load(spec.path, name=name or spec.name, scale=spec.scale if scale is None else scale)
    role = ""
    if hasattr(mgr, "adapter") and mgr.adapter(info.name).heads:  # a reward model scores answers; switched on it would change them
        mgr.disable(info.name)
        info = mgr.info(info.name)
        role = " — a reward model: kept off for answers; /score uses it"
    ctx.core.announce("adapter_loaded", name=info.name, info=info)
    if not capabilities(ctx.core.engine).weights_in_process:
        ctx.say(f"loaded adapter {info.name} on the server ({spec.path}), scale {info.scale:g}, "
                f"{'on' if info.enabled else 'off'}", "info")
        ctx.adapters_changed()
        return
    ctx.say(
        f"loaded adapter {info.name}: rank {info.rank}, {info.modules} layers ({', '.join(info.targets) or 'none'}), "
        f"{info.params:,} parameters ({info.percent:.2f}% of the model), scale {info.scale:g}{role}",
        "info",
    )
    ctx.adapters_changed()
    check_effect(ctx, info.name)


def unload_lora(ctx: CommandContext, name: str) -> None:
    mgr = _loaded(ctx)
    merged = mgr.info(name).merged
    mgr.unload(name)
    note = " (it was merged: the weights are restored within float rounding)" if merged else ""
    ctx.say(f"unloaded adapter {name}{note}", "info")
    ctx.adapters_changed()


def lora_table_cmd(ctx: CommandContext, name: str | None = None) -> None:
    """/lora: every adapter's row, then each one's ‖ΔW‖/‖W0‖ heat table; /lora NAME: that adapter's."""
    mgr = _manager(ctx)
    if name is not None:
        from chatcli.chat.step_context import require_local

        require_local(ctx.core.engine, f"/lora {name} (its weights layer by layer)")
        mgr.info(name)  # a clear error for an unknown name
    if len(mgr) == 0:
        ctx.say("no adapters loaded (/load-lora PATH loads one)", "result")
        return
    own = getattr(mgr, "table", None)  # a server's adapters have their own columns (and no weights here)
    if callable(own):
        ctx.say(own(), "result")
        return
    from chatcli.chat.lora_views import heat_table, lora_table
    from chatcli.lora.layer_norms import layer_norms

    names = [name] if name is not None else mgr.names
    ctx.say(lora_table([mgr.info(n) for n in names]), "result")
    for n in names:
        if mgr.adapter(n).modules:  # an adapter of full replacements only has no B·A to show
            ctx.say(heat_table(layer_norms(mgr, n)), "result")


def lora_scale(ctx: CommandContext, name: str, scale: str) -> None:
    mgr = _loaded(ctx)
    value = _float(scale, "scale")
    mgr.set_scale(name, value)
    ctx.say(f"adapter {name} scale {value:g}" + (" (re-merged)" if mgr.info(name).merged else ""), "info")
    ctx.adapters_changed()
    check_effect(ctx, name)


def lora_on(ctx: CommandContext, name: str) -> None:
    _loaded(ctx).enable(name)
    ctx.say(f"adapter {name} on", "info")
    ctx.adapters_changed()


def lora_off(ctx: CommandContext, name: str) -> None:
    mgr = _loaded(ctx)
    was_merged = mgr.info(name).merged
    mgr.disable(name)
    ctx.say(f"adapter {name} off" + (" (unmerged first)" if was_merged else ""), "info")
    ctx.adapters_changed()


def merge(ctx: CommandContext, name: str) -> None:
    mgr = _loaded(ctx)
    mgr.merge(name)
    ctx.say(f"adapter {name} merged into the weights (no per-token cost; /unmerge {name} separates it again)", "info")
    ctx.adapters_changed()


def unmerge(ctx: CommandContext, name: str) -> None:
    mgr = _loaded(ctx)
    if not mgr.info(name).merged:
        raise UsageError(f"adapter {name} is not merged")
    mgr.unmerge(name)
    ctx.say(f"adapter {name} unmerged (the base weights are back within float rounding)", "info")
    ctx.adapters_changed()


def compare(ctx: CommandContext, name: str | None = None) -> None:
    from chatcli.chat.answer_record import prompt_messages
    from chatcli.chat.step_context import answer_prompt_ids
    from chatcli.lora.compare import compare_answer

    mgr = _manager(ctx)
    node = _last_answer(ctx)
    if name:  # that adapter, at its scale now, against the model without it
        _loaded(ctx).info(name)  # a clear error for an unknown name
        names, scales, off = [name], None, []
    else:  # exactly the adapters that made the answer, at the scales they had
        scales = _answer_adapters(ctx, mgr, node)
        if scales is None:
            return
        names, off = list(scales), [n for n in mgr.names if n not in scales]
    engine = ctx.core.engine
    messages = prompt_messages(ctx.core.conv.messages(before=node), node.meta)  # the prompt the answer had
    if not capabilities(engine).weights_in_process:  # a server: what it returns of both distributions
        from chatcli.remote.compare import compare_remote

        result = compare_remote(engine, mgr, messages, node, names, scales)
    else:
        result = compare_answer(engine.model, mgr, answer_prompt_ids(ctx.core, node), node.ids, names=names, scales=scales, off=off, top_n=5,
                                tokenizer=engine.tokenizer)  # fmt: skip
    node.meta["compare"] = result.to_json()
    if ctx.frontend.inline_compare and result.method == "teacher-forced":  # the answer's own tokens: tint them
        ctx.show_comparison(node, result)
        return
    ctx.say(comparison_view(result), "result")


def _answer_adapters(ctx: CommandContext, mgr, node, command: str = "/compare") -> dict[str, float] | None:
    """The generation adapters recorded with ``node`` (name -> scale); None when it had none (said)."""
    from chatcli.chat.answer_record import recorded_adapters
    from chatcli.lora.compare import is_reward_model

    one = f"{command} NAME {'compares' if command == '/compare' else 'looks at'} one"
    recorded = recorded_adapters(node.meta)
    if recorded is None:
        raise UsageError("this answer does not record which adapters made it (it predates the record): "
                         f"{one}")
    rewards = [n for n in recorded if n in mgr and is_reward_model(mgr, n)]
    made = {n: s for n, s in recorded.items() if n not in rewards}
    if not made:
        aside = f" (only the reward model {', '.join(rewards)}, which is not compared)" if rewards else ""
        ctx.say(f"this answer was generated without adapters{aside}: {one}", "info")
        return None
    gone = [n for n in made if n not in mgr]
    if gone:
        raise UsageError(f"adapter {gone[0]} made this answer and is no longer loaded: /load-lora it again, "
                         f"or {one.removesuffix(' one')} a loaded one")
    return made


def _last_answer(ctx: CommandContext, command: str = "/compare"):
    for node in reversed(ctx.core.conv.path()):
        if node.role == "assistant" and node.steps:
            if node.status == "streaming":
                raise UsageError(f"the answer is still streaming; {command} when it ends")
            return node
    raise UsageError(f"no answer to {'compare' if command == '/compare' else 'look at'} yet: send a message first")


def lora_layers(ctx: CommandContext, name: str | None = None) -> None:
    """Which layers of the adapters that made the last answer move it most (per-layer ablation KL).

    Like /compare: the adapters that made the answer at their scales then (NAME: that adapter
    at its scale now). One forward per layer: where the front end owns its widgets on one
    thread (the TUI) it runs on a background thread, the status bar counting the passes."""
    from chatcli.chat.frontend import in_background
    from chatcli.chat.step_context import answer_prompt_ids, require_local
    from chatcli.lora.ablation import layer_ablation

    engine = ctx.core.engine
    if engine is None:
        raise ChatcliError("the model is still loading; try again in a moment")
    require_local(engine, "/lora-layers")
    mgr = _loaded(ctx)
    node = _last_answer(ctx, "/lora-layers")
    if name:
        mgr.info(name)  # a clear error for an unknown name
        names, scales, off = [name], None, []
    else:
        scales = _answer_adapters(ctx, mgr, node, "/lora-layers")
        if scales is None:
            return
        names, off = list(scales), [n for n in mgr.names if n not in scales]
    prompt_ids, answer_ids = answer_prompt_ids(ctx.core, node), list(node.ids)

    def work(progress) -> Any:
        return layer_ablation(engine.model, mgr, prompt_ids, answer_ids, names=names, scales=scales, off=off, progress=progress)

    def show(result) -> None:
        from chatcli.chat.lora_views import ablation_view

        ctx.say(ablation_view(result), "result")

    in_background(ctx, "/lora-layers", work, show)


def check_effect(ctx: CommandContext, name: str) -> None:
    """After /load-lora and /lora-scale: one warning line when adapter ``name``, as it is now, changes
    nothing measurable on the last answer (mean KL < 0.001 bits), with the likely reason; silence when it
    changes something. On a background thread where the front end has a UI thread. Nothing to check
    without a previous answer, on a server, or for a reward model."""
    from chatcli.chat.frontend import in_background
    from chatcli.chat.step_context import answer_prompt_ids
    from chatcli.lora.compare import answer_effect, is_reward_model

    engine = ctx.core.engine
    if engine is None or not capabilities(engine).weights_in_process:
        return
    mgr = engine.adapters
    node = next((n for n in reversed(ctx.core.conv.path()) if n.role == "assistant" and n.steps and n.status != "streaming"), None)
    if node is None or name not in mgr or is_reward_model(mgr, name):
        return
    try:
        prompt_ids, answer_ids = answer_prompt_ids(ctx.core, node), list(node.ids)
    except ChatcliError:
        return

    def work(progress) -> str | None:
        try:
            return answer_effect(engine.model, mgr, prompt_ids, answer_ids, name, tokenizer=engine.tokenizer)
        except ChatcliError:  # advice only: a check that cannot run (an answer past the context) says nothing
            return None

    def show(line: str | None) -> None:
        if line:
            ctx.say(line, "warning")

    in_background(ctx, f"checking {name}", work, show)


# --- rendering ---------------------------------------------------------------------------------


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


def status_text(engine: Any) -> str:
    """'lora: sft×0.5, dpo (merged)' for the active adapters, '' when none."""
    mgr = getattr(engine, "adapters", None)
    if mgr is None:
        return ""
    parts = []
    for i in mgr.list():
        if not i.enabled:
            continue
        parts.append(i.name + (f"×{i.scale:g}" if i.scale != 1.0 else "") + (" (merged)" if i.merged else ""))
    return "lora: " + ", ".join(parts) if parts else ""


# --- registration ------------------------------------------------------------------------------

COMMANDS = (
    Command("load-lora", load_lora, "load a LoRA adapter (PEFT folder or .safetensors): /load-lora PATH[:SCALE] [--name N] [--scale S]; "
            "no PATH in the chat: pick one from a list",
            (Arg("path", "text", optional=True, help="PATH[:SCALE] [--name N] [--scale S]"),), idle_only=True),
    Command("unload-lora", unload_lora, "unload an adapter (the model is exactly as before it)", (Arg("name"),), idle_only=True),
    Command("lora", lora_table_cmd, "list adapters: rank, alpha, scaling, targets, parameters, scale, on/off, merged, and "
            "‖ΔW‖/‖W0‖ per layer and module (NAME: that adapter)", (Arg("name", optional=True),), aliases=("loras",)),
    Command("lora-scale", lora_scale, "set an adapter's scale (any number; 0 = no effect, negative = opposite)",
            (Arg("name"), Arg("scale")), idle_only=True),
    Command("lora-on", lora_on, "switch an adapter on", (Arg("name"),), idle_only=True),
    Command("lora-off", lora_off, "switch an adapter off", (Arg("name"),), idle_only=True),
    Command("merge", merge, "merge an adapter into the weights (faster; /unmerge separates it)", (Arg("name"),), idle_only=True),
    Command("unmerge", unmerge, "separate a merged adapter from the weights again", (Arg("name"),), idle_only=True),
    Command("compare", compare, "re-score the last answer without the adapters that made it (or without NAME): per-token KL and shifts",
            (Arg("name", optional=True),), idle_only=True),
    Command("lora-layers", lora_layers, "which layers of the adapters that made the last answer (or of NAME) move it most: "
            "each layer switched off alone, mean KL in bits", (Arg("name", optional=True),), idle_only=True),
)  # fmt: skip


def install(registry: Registry) -> list[str]:
    """Add the adapter commands to ``registry`` (those already there are left as they are)."""
    added = []
    for c in COMMANDS:
        if registry.get(c.name) is c:
            continue
        registry.add(c)
        added.append(c.name)
    return added
