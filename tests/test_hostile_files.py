"""The two guards every untrusted file goes through: regular files only, JSON nesting bounded;
and the JSON Lines reader built on them."""

from __future__ import annotations

import os
import time

import pytest

from chatcli.bounded_json import MAX_DEPTH, JSONError, loads, nesting_depth
from chatcli.errors import ChatcliError, UsageError
from chatcli.jsonl import read_objects
from chatcli.regular_file import NotRegularFile, check_regular, open_regular, read_text
from tests.hang_guard import in_thread

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")




def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for fn in (open_regular, check_regular, read_text):
        with pytest.raises(NotRegularFile, match=r"is a FIFO \(named pipe\), not a regular file") as e:
            in_thread(lambda: fn(fifo, "data file"))
        assert isinstance(e.value, ChatcliError) and "\n" not in e.value.message


def test_devices_and_directories_are_refused_and_regular_files_read(tmp_path):
    with pytest.raises(NotRegularFile, match="is a character device"):
        check_regular("/dev/zero")
    with pytest.raises(NotRegularFile, match="is a directory"):
        check_regular(tmp_path)
    (tmp_path / "f.txt").write_bytes(b"caf\xc3\xa9\r\n")
    assert read_text(tmp_path / "f.txt") == "café\n" and check_regular(tmp_path / "f.txt") == 7
    with pytest.raises(FileNotFoundError):  # other OS errors stay OSErrors for the caller to word
        check_regular(tmp_path / "missing")


def test_nesting_is_counted_without_recursion_and_refused_past_the_limit():
    assert nesting_depth('{"a": [1, "[[[\\"[", {"b": []}]}') == 4  # brackets in strings do not count
    assert loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    start = time.monotonic()
    with pytest.raises(JSONError, match="nested 1000000 levels deep, more than the 64 allowed"):
        loads("[" * 1_000_000 + "]" * 1_000_000)
    assert time.monotonic() - start < 5


@pytest.mark.parametrize(
    "text, kwargs, phrase",
    [
        ("1" * 5000, {}, "a number with more than"),
        ('{"a": 1, "a": 2}', {"unique_keys": True}, "key 'a' appears twice"),
        ("[NaN]", {"finite": True}, "NaN is not a JSON number"),
        (b"\xff{}", {}, "not UTF-8 text"),
        ("{not json", {}, "not valid JSON"),
    ],
)
def test_every_json_failure_is_one_jsonerror(text, kwargs, phrase):
    with pytest.raises(JSONError, match=phrase):
        loads(text, **kwargs)


def test_jsonl_refuses_a_fifo_data_file(tmp_path):
    fifo = tmp_path / "data.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="data file .* is a FIFO"):
        in_thread(lambda: read_objects(fifo))


def test_jsonl_deep_or_huge_lines_are_bad_lines_not_crashes(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"ok": 1}\n{"a": ' + "[" * 100_000 + "]" * 100_000 + "}\n" + '{"n": ' + "9" * 5000 + "}\n")
    rows, errors = read_objects(path)
    assert [n for n, _ in rows] == [1]
    assert [e.line for e in errors] == [2, 3]
    assert errors[0].message.startswith("nested 100001 levels deep") and "more than 4300 digits" in errors[1].message
