"""A chat's sampling values as layers: what the session was started with, the model's, and ``/set``'s.

:class:`SamplingState` keeps the layers of :mod:`chatcli.settings.param_sources` for one chat
session and resolves them (flag > /set > preset > env > config > model > built-in):

- the session's layers (``flag``, ``preset``, ``env``, ``config``), fixed at start;
- ``model``: the loaded model's recommendation, replaced when a model is attached;
- ``/set``: the values set in the chat, plus those of a resumed conversation that differ
  from what the session would use (a saved conversation goes on with its own settings,
  under the flags of the command that reopened it: flag > /set).

A value typed with ``/set`` is the latest word on its parameter: it replaces that
parameter's command-line flag for the rest of the session (``chatcli chat -t 0`` then
``/set temperature 0.8`` answers at 0.8), so ``/set`` is never a no-op.

The chat core (:class:`chatcli.chat.core.ChatCore`) asks :meth:`resolve` after each change
and keeps the result as the conversation's parameters; front ends show
:attr:`~chatcli.settings.param_sources.Resolved.sources` beside the values.
"""

from __future__ import annotations

from collections.abc import Mapping

from chatcli.engine.params import SamplingParams
from chatcli.errors import UsageError
from chatcli.settings.param_sources import FIELDS, RANDOM_SEED, Resolved, explicit, resolve_sampling

SESSION_LAYERS = ("flag", "preset", "env", "config")


class SamplingState:
    def __init__(
        self, layers: Mapping[str, Mapping[str, object]] | None = None, params: SamplingParams | None = None,
    ) -> None:
        """``layers``: the session's layers; or ``params``, whose values that differ from the
        built-in defaults count as flags (a caller that built its own SamplingParams)."""
        if layers is None:
            layers = {"flag": explicit(params)} if params is not None else {}
        unknown = [name for name in layers if name not in SESSION_LAYERS]
        if unknown:
            raise ValueError(f"a chat session starts from {', '.join(SESSION_LAYERS)} layers, not {unknown}")
        self.session = {name: dict(values) for name, values in layers.items()}
        self.model: dict[str, object] = {}
        self.set_values: dict[str, object] = {}  # field -> value set with /set (RANDOM_SEED for "none")
        self.replaced: set[str] = set()  # fields typed with /set this session: their flags no longer apply
        self.resumed: dict[str, object] | None = None  # a resumed conversation's saved values

    def base(self) -> Resolved:
        """Every layer but ``/set``: what the session started from."""
        return resolve_sampling({**self.session, "model": self.model})

    def _below_set(self) -> dict[str, dict[str, object]]:
        """The layers as they now stand, without ``/set``: flags that /set replaced are gone."""
        flags = {f: v for f, v in self.session.get("flag", {}).items() if f not in self.replaced}
        return {**self.session, "flag": flags, "model": self.model}

    def resolve(self) -> Resolved:
        return resolve_sampling({**self._below_set(), "/set": self.set_layer()})

    def set_layer(self) -> dict[str, object]:
        """The ``/set`` layer: a resumed conversation's own values, then the values set since."""
        layer: dict[str, object] = {}
        if self.resumed is not None:
            base = resolve_sampling(self._below_set()).params
            layer = {f: _layer_value(f, v) for f, v in self.resumed.items() if v != getattr(base, f)}
        return {**layer, **self.set_values}

    def set(self, field: str, value: object) -> Resolved:
        """Set one field as ``/set`` does; nothing changes if the result is invalid (UsageError)."""
        before, replaced = dict(self.set_values), set(self.replaced)
        self.set_values[field] = _layer_value(field, value)
        self.replaced.add(field)
        try:
            return self.resolve()
        except UsageError:
            self.set_values, self.replaced = before, replaced
            raise

    def attach_model(self, sampling: Mapping[str, object]) -> Resolved:
        self.model = dict(sampling)
        return self.resolve()

    def resume(self, params: SamplingParams) -> Resolved:
        """Go on with a saved conversation: its values, under the session's flags (those /set has not
        replaced); the values set before give way to the conversation's own."""
        self.resumed = {f: getattr(params, f) for f in FIELDS}
        self.set_values = {}
        return self.resolve()

    def start_new(self) -> None:
        """A new conversation keeps the values the chat had set (those of a resumed one included)."""
        self.set_values = self.set_layer()
        self.resumed = None


def _layer_value(field: str, value: object) -> object:
    """A value as a layer holds it (a seed chosen per answer is RANDOM_SEED, not "not set")."""
    return RANDOM_SEED if field == "seed" and value is None else value
