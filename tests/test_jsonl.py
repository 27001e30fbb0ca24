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
    latin.write_bytes('{"t": "café"}\n'.encode("latin-1"))
    with pytest.raises(UsageError, match="not UTF-8"):
        read_objects(latin)
    rows, errors = read_objects(latin, decode_errors="replace")
    assert rows == [(1, {"t": "caf\ufffd"})] and not errors
