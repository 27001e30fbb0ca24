"""The request-body parser: nesting measured on the bytes (strings skipped), then JSON, else a 400."""

from __future__ import annotations

import json

import pytest

from chatcli.serve.errors import APIError
from chatcli.serve.json_body import MAX_DEPTH, nesting_depth, parse_json_body


@pytest.mark.parametrize(
    "raw, depth",
    [
        (b"", 0),
        (b"1", 0),
        (b'{"a": [1, {"b": 2}]}', 3),
        (b'{"a": "[[[[{{{{"}', 1),  # brackets inside a string do not count
        (b'["a\\"[[[", [[]]]', 3),  # nor after an escaped quote inside it
        (b'["a\\\\", [[]]]', 3),  # an escaped backslash ends before the closing quote
        (b'[]]]]][[', 1),  # bad JSON: still an upper bound
    ],
)
def test_nesting_depth(raw, depth):
    assert nesting_depth(raw) == depth


def test_an_unterminated_string_of_escaped_quotes_hides_its_brackets():
    raw = b'{"a": "' + b'\\"[' * 200_000
    assert nesting_depth(raw) == 1  # one pass over the string, not a retry at every quote


def test_the_limit_is_inclusive():
    ok = json.dumps(json.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH)).encode()
    assert parse_json_body(ok) == json.loads(ok)
    with pytest.raises(APIError) as e:
        parse_json_body(b"[" + ok + b"]")
    assert e.value.status == 400 and f"{MAX_DEPTH + 1} levels" in e.value.message


@pytest.mark.parametrize(
    "raw, says",
    [
        (b'{"a": "\xff"}', "not UTF-8 (byte 0xff at offset 7)"),
        (b"{not json", "could not parse"),
        (b'{"n": ' + b"7" * 5000 + b"}", "could not parse"),
    ],
)
def test_bad_bodies_are_400_with_one_line(raw, says):
    with pytest.raises(APIError) as e:
        parse_json_body(raw)
    assert e.value.status == 400 and says in e.value.message and "\n" not in e.value.message


def test_utf8_encoded_surrogates_pass_through_to_validation():
    # json.loads decodes bytes with 'surrogatepass': the field validator names the field.
    assert parse_json_body(b'{"a": "\xed\xa0\xbd"}') == {"a": "\ud83d"}
