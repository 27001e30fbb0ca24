"""The ``/set`` parameter table: names, aliases, help, and parsing and showing their values.

``/set``, the command palette and the CLI share it; :class:`chatcli.chat.core.ChatCore`
applies the parsed values to the conversation's :class:`~chatcli.engine.params.SamplingParams`.
Bad names and values raise :class:`~chatcli.errors.UsageError` with a one-line fix.
"""

from __future__ import annotations

from chatcli.errors import UsageError, did_you_mean

# The value that switches each filter off (`/set top_k off`, shown as "0 (off)").
_OFF = {"top_k": 0, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0}
PARAM_HELP = {
    "temperature": "0 = greedy; higher = flatter distribution",
    "top_k": "keep the k most probable tokens (0 = off)",
    "top_p": "keep the smallest set with this much probability (1 = off)",
    "min_p": "drop tokens below min_p x the top probability (0 = off)",
    "repetition_penalty": "divide logits of tokens already seen (1 = off)",
    "max_tokens": "longest answer, in tokens",
    "seed": "sampling seed (none = a new one each answer)",
    "top_shown": "alternatives shown per step in the probability panel",
}  # name -> help; its order is the order /set lists them in
PARAM_ALIASES = {
    "temp": "temperature", "t": "temperature", "topk": "top_k", "k": "top_k", "topp": "top_p",
    "p": "top_p", "minp": "min_p", "rep": "repetition_penalty", "repeat_penalty": "repetition_penalty",
    "max": "max_tokens", "max_new_tokens": "max_tokens", "n": "max_tokens", "top_n": "top_shown",
}


def resolve_param(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    key = PARAM_ALIASES.get(key, key)
    if key not in PARAM_HELP:
        raise UsageError(f"unknown parameter {name!r}{did_you_mean(key, PARAM_HELP)}; /set lists them")
    return key


def parse_param_value(key: str, value: str):
    v = value.strip().lower()
    if key == "seed":
        if v in ("none", "random", "-", "off"):
            return None
        return _int(key, value)
    if v in ("off", "none") and key in _OFF:
        return _OFF[key]
    if key in ("top_k", "max_tokens", "top_shown"):
        return _int(key, value)
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"invalid {key} {value!r}: use a number") from None


def _int(key: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"invalid {key} {value!r}: use an integer") from None


def format_param(key: str, value) -> str:
    if value is None:
        return "none"
    if key in _OFF and value == _OFF[key]:
        return f"{value} (off)"
    return str(value)


def param_rows(p) -> list[tuple[str, str, str]]:
    """(name, value as ``/set`` shows it, help) of every parameter ``/set`` knows, for ``p``
    (a :class:`~chatcli.engine.params.SamplingParams`)."""
    values = {**{k: getattr(p, k) for k in PARAM_HELP if k != "top_shown"}, "top_shown": p.top_n}
    return [(k, format_param(k, values[k]), PARAM_HELP[k]) for k in PARAM_HELP]


def changed_params(now, start) -> list[str]:
    """``name=value`` (as ``/set`` shows it) of each parameter of ``now`` that differs from ``start``."""
    return [f"{key}={value}" for (key, value, _), (_, was, _) in zip(param_rows(now), param_rows(start)) if value != was]
