"""The setting keys a person can keep: one table, one check per key, shared by every source.

The config file's ``[defaults]``, a preset file and the ``CHATCLI_*`` variables all hold the
same keys (:data:`KEYS`). :func:`check_value` takes a value as TOML/JSON gives it and returns
it checked (a float key takes an integer too; ``adapters`` takes one string or a list) or
raises :class:`BadValue` with the reason only; the caller says where the value was (file
and key, or variable), so every message names its place. :func:`parse_text` reads the
text of an environment variable the way the matching command-line option would.

The numeric rules are :class:`~chatcli.engine.params.SamplingParams`' own, so a value that
passes here never fails later in the sampler.
"""

from __future__ import annotations

from dataclasses import dataclass

DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Key:
    name: str
    kind: str  # "text", "model", "choice", "float", "int", "seed", "adapters", "bool"
    help: str  # one phrase for the README table and `presets show`
    choices: tuple[str, ...] = ()


def _quantize_choices() -> tuple[str, ...]:
    from chatcli.model.quant_choice import CHOICES

    return CHOICES


KEYS: dict[str, Key] = {k.name: k for k in (
    Key("model", "model", "model name, local directory, .gguf file or hf:ORG/NAME"),
    Key("dtype", "choice", "weights' dtype", DTYPES),
    Key("quantize", "choice", "weight-only quantization", _quantize_choices()),
    Key("temperature", "float", "0 = greedy"),
    Key("top_p", "float", "nucleus mass in (0, 1]"),
    Key("top_k", "int", "keep the k most probable tokens (0 = off)"),
    Key("min_p", "float", "drop tokens below min_p x the top probability"),
    Key("repetition_penalty", "float", "1 = off"),
    Key("seed", "seed", "same seed, same output"),
    Key("system", "text", "system message (\"\" sends an empty one)"),
    Key("max_tokens", "int", "most new tokens per answer"),
    Key("adapters", "adapters", "LoRA adapters, PATH[:SCALE] or NAME[:SCALE]"),
    Key("save_history", "bool", "keep chats and generate runs in the history (false: --no-save)"),
    Key("compile", "bool", "compile the CPU decode step ahead of time (--compile; unset: float32, int8, int4 and bfloat16 once built)"),
)}  # fmt: skip

# The keys the sampler reads (chatcli.settings.param_sources resolves them, with the model's own).
SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "seed")


_BOOL_WORDS = {**dict.fromkeys(("1", "true", "t", "yes", "y", "on"), True),
               **dict.fromkeys(("0", "false", "f", "no", "n", "off"), False)}  # fmt: skip


class BadValue(ValueError):
    """A value a key cannot take; ``str()`` is the reason, without the place."""


def _type_name(value: object) -> str:
    return {bool: "a boolean", str: "a string", int: "an integer", float: "a number", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)  # fmt: skip


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def check_value(name: str, value: object) -> object:
    """``value`` checked for key ``name`` (which must be in :data:`KEYS`); :class:`BadValue` if not."""
    key = KEYS[name]
    kind = key.kind
    if kind in ("text", "model", "choice"):
        if not isinstance(value, str):
            raise BadValue(f"must be a string, not {_type_name(value)} {_shown(value)}")
        if kind == "model" and not value.strip():
            raise BadValue("must name a model, not be empty")
        if kind == "choice" and value not in key.choices:
            raise BadValue(f"must be one of {', '.join(key.choices)}, not {_shown(value)}")
        if any(0xD800 <= ord(c) <= 0xDFFF for c in value):  # lone surrogates cannot be printed or saved
            raise BadValue("is not valid Unicode text")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise BadValue(f"must be true or false, not {_type_name(value)} {_shown(value)}")
        return value
    if kind == "adapters":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(a, str) and a.strip() for a in items):
            raise BadValue(f"must be a list of adapter names or paths, not {_shown(value)}")
        return [a.strip() for a in items]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind != "float" and isinstance(value, float)):
        wanted = "a number" if kind == "float" else "an integer"
        raise BadValue(f"must be {wanted}, not {_type_name(value)} {_shown(value)}")
    if kind == "float":
        value = float(value)
    _check_range(name, value)
    return value


def _check_range(name: str, value: int | float) -> None:
    """SamplingParams' rule for ``name``, worded without its 'invalid NAME VALUE' prefix."""
    from chatcli.engine.params import SamplingParams, check_seed
    from chatcli.errors import UsageError

    try:
        if name == "seed":
            check_seed(value)
        else:
            SamplingParams(**{name: value})
    except UsageError as e:
        raise BadValue(f"cannot be {_shown(value)}: {e.message.split(': ', 1)[-1]}") from None


def parse_text(name: str, text: str) -> object:
    """The text of an environment variable as key ``name``'s value (checked); :class:`BadValue` if not.

    As for the options: numbers are parsed, and ``adapters`` are separated by spaces (the way
    click splits a repeatable option's environment variable).
    """
    kind = KEYS[name].kind
    if kind == "adapters":
        return check_value(name, text.split())
    if kind == "bool":  # the words click's flags take from a variable
        word = text.strip().lower()
        if word not in _BOOL_WORDS:
            raise BadValue(f"must be true or false (1/0, yes/no, on/off), not {_shown(text)}")
        return _BOOL_WORDS[word]
    if kind in ("float", "int", "seed"):
        try:
            value: object = float(text) if kind == "float" else int(text.strip())
        except ValueError:
            raise BadValue(f"must be {'a number' if kind == 'float' else 'an integer'}, not {_shown(text)}") from None
        return check_value(name, value)
    return check_value(name, text)

