"""TOML in and out for the settings files: bounded parsing, a small writer, atomic replacement.

:func:`parse` turns text into a dict or raises ``ValueError`` with one phrase (tomllib's own
message keeps the line and column; ``[[[...`` nested past the recursion limit is "nested too
deeply", not a traceback). :func:`dumps` writes the flat tables chatcli saves (strings,
numbers, lists of strings) and checks its own output by parsing it back. :func:`chatcli.paths.write_text_atomic`
replaces a file whole: written to a temporary file beside it, fsynced, renamed, the folder
fsynced — a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import math
from pathlib import Path

MAX_BYTES = 1 << 20  # a settings file is a few lines; a megabyte is a mistake, not a setting


def _tomllib():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise ValueError("reading TOML needs Python 3.11 or the tomli package; use config.json") from None
    return tomllib


def parse(data: bytes) -> dict:
    """The TOML document in ``data``; ``ValueError`` (one phrase, with the line) if it is not one."""
    if len(data) > MAX_BYTES:
        raise ValueError(f"larger than {MAX_BYTES // 1024} KB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    tomllib = _tomllib()
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"not valid TOML: {e}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ValueError("nested too deeply") from None


def _string(text: str) -> str:
    """A TOML basic string: quote, backslash and control characters escaped, the rest as is."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:
            raise ValueError("a lone surrogate cannot be written to a TOML file")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} cannot be written to a settings file")
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise ValueError(f"a {type(value).__name__} cannot be written to a settings file")


def dumps(values: dict[str, object], header: str = "") -> str:
    """``values`` (flat: strings, numbers, lists) as TOML, after ``header`` comment lines."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines += [f"{key} = {_value(value)}" for key, value in values.items()]
    text = "\n".join(lines) + "\n"
    if parse(text.encode("utf-8")) != {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}:
        raise ValueError("the settings did not survive a round trip through TOML")  # a writer bug, caught before saving
    return text
