"""The adapter commands that measure what the adapters do to the last answer.

``/compare`` re-scores the last answer with and without exactly the adapters that made it,
at the scales they had (recorded with the answer, :mod:`chatcli.chat.answer_record`;
``/compare NAME``: that adapter at its scale now); a reward model is never part of it. A
front end that declares ``inline_compare`` (:class:`chatcli.chat.frontend.FrontEnd`) tints
its transcript with a comparison of the answer's own tokens, others (and a server's
comparison of two new answers) get :func:`~chatcli.chat.lora_views.comparison_view`.
``/lora-layers`` ranks the layers by the KL that switching the adapters off there alone
causes on the last answer (:mod:`chatcli.lora.ablation`; the same adapters and scales as
``/compare``), on a background thread where the front end owns its widgets on one; it needs
the weights in this process (one line on a server). :func:`check_effect` runs after
``/load-lora`` and ``/lora-scale``: one warning line when the adapter changes nothing
measurable on the last answer (mean KL < 0.001 bits), with the likely reason.
:mod:`chatcli.chat.lora_commands` registers these commands with the others.
"""

from __future__ import annotations

from typing import Any

from chatcli.chat.commands import CommandContext
from chatcli.chat.lora.adapter_control import adapter_control, loaded_control
from chatcli.chat.lora_views import comparison_view
from chatcli.engine.protocol import capabilities
from chatcli.errors import ChatcliError, UsageError


def compare(ctx: CommandContext, name: str | None = None) -> None:
    from chatcli.chat.answer_record import prompt_messages
    from chatcli.chat.step_context import answer_prompt_ids
    from chatcli.lora.compare import compare_answer

    mgr = adapter_control(ctx)
    node = _last_answer(ctx)
    if name:  # that adapter, at its scale now, against the model without it
        loaded_control(ctx).info(name)  # a clear error for an unknown name
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
    mgr = loaded_control(ctx)
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
