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

This module holds the commands that change adapters and registers them all; the ones that
measure them on the last answer (``/compare``, ``/lora-layers``, :func:`check_effect`) are in
:mod:`chatcli.chat.lora.effect_commands`, which adapter control a command acts on in
:mod:`chatcli.chat.lora.adapter_control`, how it is drawn in :mod:`chatcli.chat.lora_views`.
"""

from __future__ import annotations

import os
import shlex
from typing import Any

from chatcli.chat.commands import Arg, Command, CommandContext, Registry
from chatcli.chat.lora.adapter_control import adapter_control, loaded_control, scale_arg
from chatcli.chat.lora.effect_commands import check_effect, compare, lora_layers
from chatcli.engine.protocol import capabilities
from chatcli.errors import UsageError


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
                scale = scale_arg(value, "--scale")
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
    mgr = adapter_control(ctx)
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
    mgr = loaded_control(ctx)
    merged = mgr.info(name).merged
    mgr.unload(name)
    note = " (it was merged: the weights are restored within float rounding)" if merged else ""
    ctx.say(f"unloaded adapter {name}{note}", "info")
    ctx.adapters_changed()


def lora_table_cmd(ctx: CommandContext, name: str | None = None) -> None:
    """/lora: every adapter's row, then each one's ‖ΔW‖/‖W0‖ heat table; /lora NAME: that adapter's."""
    mgr = adapter_control(ctx)
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
    mgr = loaded_control(ctx)
    value = scale_arg(scale, "scale")
    mgr.set_scale(name, value)
    ctx.say(f"adapter {name} scale {value:g}" + (" (re-merged)" if mgr.info(name).merged else ""), "info")
    ctx.adapters_changed()
    check_effect(ctx, name)


def lora_on(ctx: CommandContext, name: str) -> None:
    loaded_control(ctx).enable(name)
    ctx.say(f"adapter {name} on", "info")
    ctx.adapters_changed()


def lora_off(ctx: CommandContext, name: str) -> None:
    mgr = loaded_control(ctx)
    was_merged = mgr.info(name).merged
    mgr.disable(name)
    ctx.say(f"adapter {name} off" + (" (unmerged first)" if was_merged else ""), "info")
    ctx.adapters_changed()


def merge(ctx: CommandContext, name: str) -> None:
    mgr = loaded_control(ctx)
    mgr.merge(name)
    ctx.say(f"adapter {name} merged into the weights (no per-token cost; /unmerge {name} separates it again)", "info")
    ctx.adapters_changed()


def unmerge(ctx: CommandContext, name: str) -> None:
    mgr = loaded_control(ctx)
    if not mgr.info(name).merged:
        raise UsageError(f"adapter {name} is not merged")
    mgr.unmerge(name)
    ctx.say(f"adapter {name} unmerged (the base weights are back within float rounding)", "info")
    ctx.adapters_changed()


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
