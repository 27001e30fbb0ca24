"""JSON that chatcli did not write (headers, configs, data lines): nesting bounded before parsing.

``json.loads`` recurses once per nesting level, so ``[[[[...]]]]`` 100 000 levels deep
ends in a ``RecursionError`` (not a ``ValueError``: callers' handlers miss it and a
traceback escapes), and a 5 000-digit integer in a ``ValueError`` that is no
``JSONDecodeError``. :func:`loads` counts the nesting first, without recursing,
refuses more than :data:`MAX_DEPTH` levels (no file chatcli reads needs more than a
handful), and turns every failure into one :class:`JSONError` (a ``ValueError``) with
a one-phrase reason. ``unique_keys`` refuses an object that repeats a key (a header
where a later entry silently replaces an earlier one); ``finite`` refuses the
``NaN``/``Infinity`` extensions Python's parser accepts and strict parsers do not.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from typing import Any

MAX_DEPTH = 64

# A JSON string literal (escapes included), unrolled so it never backtracks; brackets inside
# strings are not structure, so strings are removed before counting.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_CHUNK = 1 << 20


class JSONError(ValueError):
    """JSON that cannot be used; ``str()`` is the reason, one phrase."""


def nesting_depth(text: str) -> int:
    """The deepest bracket nesting of ``text`` (exact for valid JSON), counted without recursion."""
    import numpy as np  # a running sum in C: a 100 MB header is counted in about 3 s, not 12

    brackets = np.frombuffer(_NOT_BRACKET.sub("", _STRING.sub("", text)).encode("ascii"), np.uint8)
    peak = level = 0
    for i in range(0, len(brackets), _CHUNK):  # in chunks: a running sum of 100M int64 would be 800 MB
        chunk = brackets[i : i + _CHUNK]
        run = np.cumsum(np.where((chunk == ord("[")) | (chunk == ord("{")), 1, -1), dtype=np.int64) + level
        peak, level = max(peak, int(run.max())), int(run[-1])
    return peak


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise JSONError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise JSONError(f"{name} is not a JSON number")


def loads(
    text: str | bytes,
    *,
    max_depth: int = MAX_DEPTH,
    unique_keys: bool = False,
    finite: bool = False,
    parse_int: Callable[[str], Any] | None = None,
) -> Any:
    """``json.loads`` with bounded nesting; any problem is a :class:`JSONError`."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise JSONError(f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    # Depth cannot exceed the number of opening brackets: most files are done after two counts.
    depth = nesting_depth(text) if text.count("[") + text.count("{") > max_depth else 0
    if depth > max_depth:
        raise JSONError(f"nested {depth} levels deep, more than the {max_depth} allowed")
    kwargs: dict[str, Any] = {}
    if unique_keys:
        kwargs["object_pairs_hook"] = _unique
    if finite:
        kwargs["parse_constant"] = _no_constant
    if parse_int is not None:
        kwargs["parse_int"] = parse_int
    try:
        return json.loads(text, **kwargs)
    except JSONError:
        raise
    except json.JSONDecodeError as e:
        raise JSONError(f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except ValueError:  # Python refuses integers longer than sys.get_int_max_str_digits()
        limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 4300
        raise JSONError(f"a number with more than {limit} digits") from None
    except RecursionError:  # unreachable after the depth count; kept so no traceback can escape
        raise JSONError("nested too deeply") from None
