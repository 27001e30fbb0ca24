"""The chat's settings: ``/set``'s sampling parameters, where each came from, the system prompt, ``/new``.

:class:`ChatSettings` is a mixin of :class:`~chatcli.chat.core.ChatCore`. The values live in
the core's :class:`~chatcli.settings.sampling_state.SamplingState` (flag, preset, env,
config, the model's own defaults, ``/set``) and in the conversation (``conv.params``,
``conv.system``); a change is validated before anything changes, and saved with the
conversation's header when the conversation is already in the history.
"""

from __future__ import annotations

from chatcli.chat.params import changed_params, format_param, param_rows, parse_param_value, resolve_param
from chatcli.chat.session import Conversation
from chatcli.engine.params import SamplingParams
from chatcli.settings.param_sources import Resolved


class ChatSettings:
    def set_param(self, name: str, value: str) -> str:
        """Validate and apply one sampling parameter; returns 'name = value'. Nothing changes on error."""
        key = resolve_param(name)
        field = "top_n" if key == "top_shown" else key
        parsed = parse_param_value(key, value)
        self._use(self.sampling.set(field, parsed))  # SamplingParams validates
        self._persist(lambda s: s.save_conversation(self.conv) if self.conv.id is not None else None)
        return f"{key} = {format_param(key, parsed)}"

    def param_rows(self) -> list[tuple[str, str, str]]:
        return param_rows(self.conv.params)

    def param_source(self, key: str) -> str:
        """Where the value of ``/set``'s parameter ``key`` came from ("/set", "model", "built-in", ...)."""
        return self.param_sources.get("top_n" if key == "top_shown" else key, "built-in")

    def _use(self, resolved: Resolved) -> None:
        self.conv.params, self.param_sources = resolved.params, resolved.sources

    def set_system(self, text: str | None) -> None:
        self.conv.system = text or None
        self._persist(lambda s: s.save_conversation(self.conv) if self.conv.id is not None else None)

    def new_conversation(self, *, keep_system: bool) -> None:
        """Start over with the same sampling parameters (``/set`` values carry over), the system
        prompt kept or back to the session's default; the previous conversation stays in the history."""
        system = self.conv.system if keep_system else self.default_system
        self.sampling.start_new()
        self.conv = Conversation(system=system, params=self.conv.params)
        if self.engine is not None:
            self.conv.model = self.engine.identity.name

    @property
    def default_params(self) -> SamplingParams:
        """What the session starts from: every layer but ``/set``."""
        return self.sampling.base().params

    def changed_params(self) -> list[str]:
        """``name=value`` of each sampling parameter that differs from the session's start."""
        return changed_params(self.conv.params, self.default_params)
