"""A request's raw body -> a JSON value, with its nesting bounded before it is parsed.

``json.loads`` recurses once per level of nesting, and so does everything that walks
the value afterwards, so a body of 100,000 ``[`` is a ``RecursionError`` instead of
an answer. :func:`parse_json_body` first measures the nesting on the bytes: JSON
strings are cut out (by a regular expression that cannot backtrack: an unterminated
string runs to the end), the remaining brackets become +1/-1 steps and the running
sum's maximum is the depth; all of it runs in C. A body deeper than ``MAX_DEPTH`` is
refused, as is one that is not UTF-8 JSON; every refusal is a 400 ``APIError``.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from chatcli.serve.errors import APIError

MAX_DEPTH = 64  # OpenAI bodies nest 4 or 5 levels; tool schemas a few more

# A JSON string: quote, then runs of plain characters or escapes; the closing quote is
# optional so that an unterminated string ends the match instead of failing it (which
# would make the search retry at every later quote: quadratic).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


def nesting_depth(raw: bytes) -> int:
    """How deeply the arrays and objects of JSON text ``raw`` nest (an upper bound for bad JSON)."""
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def parse_json_body(raw: bytes) -> Any:
    """The JSON value of a request body, or a 400 that says what is wrong with it."""
    depth = nesting_depth(raw)
    if depth > MAX_DEPTH:
        raise APIError(f"the JSON body nests {depth} levels deep (at most {MAX_DEPTH}): send a flatter request", 400,
                       code="invalid_json")  # fmt: skip
    try:
        return json.loads(raw)
    except UnicodeDecodeError as e:
        raise APIError(f"the request body is not UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start}): "
                       "send UTF-8 JSON", 400, code="invalid_json") from None  # fmt: skip
    except (ValueError, RecursionError) as e:  # JSONDecodeError, an integer of over 4300 digits
        message = " ".join(str(e).split())[:200]
        raise APIError(f"could not parse the JSON body of the request ({message}): send one JSON object", 400,
                       code="invalid_json") from None  # fmt: skip
