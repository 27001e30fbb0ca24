"""The shared JSON Lines reader: objects by line number, bad lines named, unreadable files refused."""

from __future__ import annotations

import pytest

from chatcli.errors import UsageError
from chatcli.jsonl import read_objects


def test_objects_by_line_and_bad_lines_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n{broken\n[1, 2]\n  \n{"b": "é"}\n', encoding="utf-8")
    rows, errors = read_objects(path)
    assert rows == [(1, {"a": 1}), (6, {"b": "é"})]
    assert [(e.line, e.message.split(" (")[0]) for e in errors] == [(3, "not valid JSON"), (4, "not a JSON object")]
    assert str(errors[1]) == f"{path}:4: not a JSON object"


def test_unreadable_or_non_utf8_files(tmp_path):
    with pytest.raises(UsageError, match="cannot read"):
        read_objects(tmp_path / "missing.jsonl")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"ok": 1}\n' + '{"t": "café"}\n'.encode("latin-1"))
    # Refused as a whole (an encoding belongs to the file), naming the first bad line, never replaced.
    with pytest.raises(UsageError) as e:
        read_objects(latin)
    assert e.value.message == f"{latin}:2: not UTF-8 text (byte 0xe9 at column 11); save the file as UTF-8"


def test_half_a_surrogate_pair_is_a_bad_line(tmp_path):
    # "\ud83d" alone parses as JSON but is not text: the tokenizer, SQLite and UTF-8 output reject it.
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": "\\ud83d"}\n{"b": ["x", {"\\udc00": 1}]}\n{"c": "\\ud83d\\ude00"}\n', encoding="utf-8")
    rows, errors = read_objects(path)
    assert rows == [(3, {"c": "\U0001f600"})]  # a whole pair is one character
    assert [e.line for e in errors] == [1, 2]
    assert str(errors[0]) == (f"{path}:1: holds \\ud83d, half of a UTF-16 surrogate pair, not text; "
                              "write the whole character (or both halves)")
