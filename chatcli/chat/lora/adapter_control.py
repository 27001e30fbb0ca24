"""Which adapter control an adapter command acts on, and its scale argument checked.

:func:`adapter_control` is the engine's ``adapters``: the local
:class:`~chatcli.lora.manager.AdapterManager`, or a server's adapter control (the same
verbs over its LoRA endpoints). Each failure is one line that says what to do: the model
still loading (:class:`ChatcliError`), a server without LoRA endpoints, an engine without
a local model, no adapter loaded yet (:func:`loaded_control`), a scale that is not a finite
number (:class:`UsageError`).
"""

from __future__ import annotations

from chatcli.chat.commands import CommandContext
from chatcli.engine.protocol import capabilities
from chatcli.errors import ChatcliError, UsageError


def adapter_control(ctx: CommandContext):
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


def loaded_control(ctx: CommandContext):
    mgr = adapter_control(ctx)
    if len(mgr) == 0:
        raise UsageError("no adapter is loaded: /load-lora PATH loads one")
    return mgr


def scale_arg(text: str, what: str) -> float:
    from chatcli.lora.manager import check_scale

    try:
        return check_scale(text)
    except UsageError:
        raise UsageError(f"{what} must be a finite number, not {text!r}") from None
