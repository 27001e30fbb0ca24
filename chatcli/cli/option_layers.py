"""The config file's ``[defaults]``, the ``CHATCLI_*`` variables and ``--preset`` as layers of a command's options.

Which option takes which setting is read from the option itself: an option whose
``envvar`` is a setting's variable (``CHATCLI_TEMPERATURE``, see
:mod:`chatcli.settings.env`) takes that setting — from the environment (click reads the
variable) and from ``[defaults]`` (:func:`default_map`, typer's ``default_map``). So
"``--help`` shows ``env var: CHATCLI_X``" and "``[defaults] x`` applies" always go
together, and an option with the same name but another meaning (``lora diff``'s greedy
``--temperature``, ``models import``'s ``--dtype``) takes neither.

After click has parsed, :meth:`Layers.from_context` sorts each such value by where it came
from (``ctx.get_parameter_source``: COMMANDLINE = "flag", ENVIRONMENT = "env",
DEFAULT_MAP = "config") and adds the ``--preset``'s values; :meth:`Layers.value` picks
flag > preset > env > config > built-in. That is how the values that are not sampling
values (model, dtype, quantize, system, adapters) are chosen; the sampling values take the
same sources through :func:`chatcli.cli.common.sampling_layers` to
:func:`chatcli.settings.param_sources.resolve_sampling`, which adds the model's own layer.

Before any of that, click hands each option's value to typer to be typed, and typer does it with a
pydantic ``TypeAdapter`` per option (importing pydantic and building ~30 validators on every
``chatcli generate``: 6-8 MB of resident memory, issue 18). :func:`read_plain_values` has the plain
options (text, a whole number, a number, a switch, repeatable text; no parser, bounds or file)
read their usual values directly: nothing (``None``), a value that already has the option's type, a
word of ASCII digits for a whole number, digits with an optional fraction for a number, a switch's
words (``1``/``0``, ``yes``/``no``, ``on``/``off``, ``true``/``false`` ...); each gives
exactly what typer's coercion gives (tests/cli/test_plain_values.py compares them). Every other
value, an error included, still goes to typer's own coercion, built the first time one comes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chatcli.settings.env import ENV_VARS

ORDER = ("flag", "preset", "env", "config")  # highest first; "built-in" below them all
_KEY_OF_VAR = {var: key for key, var in ENV_VARS.items()}
_SOURCE = {"COMMANDLINE": "flag", "ENVIRONMENT": "env", "DEFAULT_MAP": "config"}


def keyed_params(command: Any) -> dict[str, Any]:
    """``{setting key: click parameter}`` for the options of ``command`` that carry a setting's variable."""
    found = {}
    for param in getattr(command, "params", ()):
        var = getattr(param, "envvar", None)
        if isinstance(var, str) and var in _KEY_OF_VAR:
            found[_KEY_OF_VAR[var]] = param
    return found


def default_map(command: Any, defaults: Mapping[str, object]) -> dict[str, Any]:
    """typer's ``default_map`` for the tree under ``command``: ``[defaults]`` for every option that takes it."""
    out: dict[str, Any] = {}
    for name, sub in getattr(command, "commands", {}).items():
        if hasattr(sub, "commands"):
            entry = default_map(sub, defaults)
        else:
            entry = {p.name: defaults[k] for k, p in keyed_params(sub).items() if k in defaults}
        if entry:
            out[name] = entry
    return out


def label_config_defaults(command: Any, defaults: Mapping[str, object]) -> None:
    """``--help`` says where a default came from: ``[default: (0.3, from the config file)]``."""
    for sub in getattr(command, "commands", {}).values():
        label_config_defaults(sub, defaults)
        for key, param in keyed_params(sub).items():
            if key in defaults:
                value = defaults[key]
                shown = " ".join(map(str, value)) if isinstance(value, list) else str(value)
                param.show_default = f"{shown}, from the config file"


def target(root: Any, args: list[str]) -> Any:
    """The command ``args`` would run (groups followed by their first word); None for the root itself."""
    command = None
    group = root
    for word in args:
        if word.startswith("-"):
            continue
        sub = getattr(group, "commands", {}).get(word)
        if sub is None:
            break
        command = group = sub
        if not hasattr(sub, "commands"):
            break
    return command


@dataclass
class Layers:
    """The values of one command run by where they came from; ``builtin``: what the option itself defaults to."""

    layers: dict[str, dict[str, object]] = field(default_factory=lambda: {s: {} for s in ORDER})
    builtin: dict[str, object] = field(default_factory=dict)

    @classmethod
    def from_context(cls, ctx: Any, preset: Mapping[str, object] | None = None) -> Layers:
        """This run's layers; ``preset``: the values of a ``--preset`` (:func:`load_preset_values`)."""
        made = cls()
        keyed = keyed_params(ctx.command)
        for key, param in keyed.items():
            source = ctx.get_parameter_source(param.name)
            value = ctx.params.get(param.name)
            layer = _SOURCE.get(getattr(source, "name", ""))
            if layer is None:
                made.builtin[key] = value
            elif value is not None and value != [] and value != ():  # an empty repeatable option gives nothing
                made.layers[layer][key] = list(value) if isinstance(value, tuple) else value
        made.layers["preset"] = {k: v for k, v in (preset or {}).items() if k in keyed}
        return made

    def value(self, key: str) -> Any:
        """The value of ``key``: flag > preset > env > config > built-in."""
        for source in ORDER:
            if key in self.layers[source]:
                return self.layers[source][key]
        return self.builtin.get(key)

    def compile_choice(self) -> bool | str:
        """``compile`` as the engine takes it: what a flag, preset, env or config set, else "auto" (float32,
        int8 and int4 models use a compiled step once one is built; see chatcli.engine.compile_build)."""
        return bool(self.value("compile")) if self.source("compile") != "built-in" else "auto"

    def source(self, key: str) -> str:
        """Where :meth:`value` found ``key``: "flag", "preset", "env", "config" or "built-in"."""
        return next((s for s in ORDER if key in self.layers[s]), "built-in")

    def given(self, key: str) -> bool:
        """Whether ``key`` was typed on this command line (local-only options refuse ``--endpoint`` only then)."""
        return key in self.layers["flag"]


def load_preset_values(name: str | None) -> dict[str, object]:
    """The values of ``--preset NAME`` ({} without one); unknown or broken: one line, exit 2, before anything runs."""
    if name is None:
        return {}
    from chatcli.settings.presets import load_preset

    return dict(load_preset(name).values)


_WHOLE = re.compile(r"-?[0-9]{1,18}")  # [0-9], not \d: typer refuses other scripts' digits
_NUMBER = re.compile(r"-?[0-9]{1,18}(?:\.[0-9]{1,18})?")
_SWITCH = {"": False, **dict.fromkeys(("1", "on", "t", "true", "y", "yes"), True),
           **dict.fromkeys(("0", "off", "f", "false", "n", "no"), False)}  # a switch's words (CHATCLI_SAVE_HISTORY=0)
_NOT_PLAIN = object()


def read_plain_values(root: Any) -> None:
    """Have the plain options of every command under ``root`` (their ``--help`` option included) read
    their usual values without pydantic (see the module docstring). Nothing changes with a typer
    whose parameters are not built as this one's are."""
    try:
        from typer._coercion import build_runtime_param
        from typer.core import _TyperParameter
    except ImportError:
        return
    from chatcli.cli.help_format import HELP_NAMES

    helper = root.get_help_option(HELP_NAMES) if hasattr(root, "get_help_option") else None
    for param in (*getattr(root, "params", ()), helper):
        if isinstance(param, _TyperParameter) and getattr(param, "_runtime_param", _NOT_PLAIN) is None \
                and _plain(getattr(param, "type_descriptor", None)):
            param._runtime_param = _PlainValue(param.type_descriptor, build_runtime_param)
    for sub in getattr(root, "commands", {}).values():
        read_plain_values(sub)


def _plain(descriptor: Any) -> bool:
    info, kind = getattr(descriptor, "parameter_info", None), getattr(descriptor, "annotation", None)
    if info is None or not hasattr(descriptor, "file_annotation"):  # another typer: leave it to typer
        return False
    if info.parser is not None or descriptor.file_annotation is not None:
        return False
    bounded = info.min is not None or info.max is not None or info.clamp
    return kind in (str, bool) or (kind in (int, float) and not bounded) or kind == list[str]


class _PlainValue:
    """typer's coercion of one plain parameter (its ``RuntimeParam``): ``coerce`` reads the usual values
    itself and hands every other one to typer's, built on first need."""

    def __init__(self, descriptor: Any, build: Any):
        self.kind, self._descriptor, self._build, self._typer = descriptor.annotation, descriptor, build, None

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None:  # as typer: nothing given is () for a repeatable parameter, None otherwise
            return () if param.multiple or param.nargs == -1 else None
        read = _read(self.kind, value)
        if read is not _NOT_PLAIN:
            return read
        if self._typer is None:
            self._typer = self._build(self._descriptor)
        return self._typer.coerce(value, param=param, ctx=ctx)


def _read(kind: Any, value: Any) -> Any:
    """``value`` as a ``kind``, where that is sure to be what typer reads; else ``_NOT_PLAIN``."""
    if kind == list[str]:
        return list(value) if type(value) in (list, tuple) and all(type(v) is str for v in value) else _NOT_PLAIN
    if type(value) is kind:
        return value
    if type(value) is str and kind is int and _WHOLE.fullmatch(value):
        return int(value)
    if type(value) is str and kind is float and _NUMBER.fullmatch(value):
        return float(value)  # correctly rounded, as pydantic's reading of the same digits
    if type(value) is str and kind is bool and (word := value.strip().lower()) in _SWITCH:
        return _SWITCH[word]
    return _NOT_PLAIN
