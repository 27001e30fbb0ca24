"""A chat's thinking switch: ``--think``/``--no-think`` and ``/think``, kept across model loads.

Qwen3-style chat templates read ``enable_thinking`` (:mod:`chatcli.tokenizer.thinking`). The
chat keeps the person's choice here and hands it to each engine it attaches (the local engine's
optional ``set_thinking``, :class:`chatcli.engine.loader.PromptRenderer`), so it also holds for a
model that loads later. A template without the switch changes nothing: at start that is one
warning line; ``/think`` on such a model is a one-line error and nothing changes. A server
applies its own template, so there the switch is not offered.
"""

from __future__ import annotations

from collections.abc import Callable

from chatcli.engine.protocol import capabilities
from chatcli.errors import UsageError
from chatcli.tokenizer.thinking import no_switch_message

STATES = {"on": True, "off": False, "default": None}
SAID = {
    True: "thinking on: the model reasons in a <think> block (shown faint) before it answers, from the next answer",
    False: "thinking off: the template closes an empty <think> block, so the model answers at once",
    None: "thinking: the template's default from the next answer",
}


class ThinkingSwitch:
    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = enabled  # None: the template's default (enable_thinking left undefined)

    def attach(self, engine, say: Callable[[str, str], None]) -> None:
        """Apply the choice to a newly loaded engine; a template without the switch is one warning."""
        if self.enabled is None:
            return
        try:
            self._apply(engine, self.enabled)
        except UsageError as e:
            say(e.message, "warning")

    def set(self, engine, state: str) -> str:
        """``/think on|off|default``: apply it (UsageError, nothing changed, if it cannot be); the line to say."""
        key = state.strip().lower()
        if key not in STATES:
            raise UsageError(f"/think takes on, off or default, not {state!r}")
        if engine is None:
            raise UsageError("the model is still loading; try /think again in a moment")
        self._apply(engine, STATES[key])
        self.enabled = STATES[key]
        return SAID[self.enabled]

    @staticmethod
    def _apply(engine, enabled: bool | None) -> None:
        caps = capabilities(engine)
        if not caps.exact_prompt:
            raise UsageError(f"{caps.unsupported('the thinking switch')} (the server applies its own chat template)")
        switch = getattr(engine, "set_thinking", None)
        if switch is None or not switch(enabled):
            raise UsageError(no_switch_message(engine.identity.name))
