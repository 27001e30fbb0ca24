"""JSON Lines input for the plugins' data files: one object per line, bad lines named by number.

Contract: :func:`read_objects` returns ``(line number, object)`` for every non-blank
line holding a JSON object and a :class:`LineError` (``FILE:LINE: what``) for every
other non-blank line; callers add their own per-record errors with the same class and
decide to skip the bad lines or refuse the file (``--strict``). A file that cannot be
opened, or is not a regular file (a FIFO would block, a device never end), is a
:class:`UsageError`; a line nested deeper than
:data:`~chatcli.bounded_json.MAX_DEPTH` or holding a number too long to convert is a
bad line.

Text that is not text is refused, never replaced (a data file is trained on or
stored, and U+FFFD in it would be silent damage): a file with bytes that are not
UTF-8 is refused as a whole, naming its first such line (an encoding belongs to the
file: re-save it); a line whose JSON holds half of a UTF-16 surrogate pair (an escape
such as ``"\\ud83d"`` without its partner) is a :class:`LineError` like any other bad
record, since the tokenizer, SQLite and UTF-8 output all reject such strings.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

from chatcli.bounded_json import JSONError, loads
from chatcli.errors import UsageError
from chatcli.regular_file import NotRegularFile, open_regular

# In a raw line: an undecodable byte (read with surrogateescape); in a parsed string: a bad escape.
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class LineError:
    path: Path | str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def read_objects(path: Path | str) -> tuple[list[tuple[int, dict]], list[LineError]]:
    """The JSON objects of ``path`` by line number, and the lines that are not objects."""
    path = Path(path)
    try:
        # surrogateescape: an undecodable byte arrives as a lone surrogate, so its line can be named.
        f = io.TextIOWrapper(open_regular(path, "data file"), encoding="utf-8", errors="surrogateescape")
    except NotRegularFile as e:  # a FIFO or device would block or never end
        raise UsageError(e.message) from None
    except OSError as e:
        raise UsageError(f"cannot read {path} ({e.strerror or e})") from None
    rows: list[tuple[int, dict]] = []
    errors: list[LineError] = []
    with f:
        for n, raw in enumerate(f, 1):
            bad = _SURROGATE.search(raw)
            if bad:
                byte = ord(bad.group()) - 0xDC00
                raise UsageError(f"{path}:{n}: not UTF-8 text (byte 0x{byte:02x} at column {bad.start() + 1}); "
                                 "save the file as UTF-8")
            if not raw.strip():
                continue
            try:  # bounded: a line nested 100 000 deep or a 5 000-digit number is a bad line, not a crash
                obj = loads(raw)
            except JSONError as e:
                errors.append(LineError(path, n, str(e)))
                continue
            if not isinstance(obj, dict):
                errors.append(LineError(path, n, "not a JSON object"))
                continue
            half = lone_surrogate(obj) if "\\u" in raw else None  # only an escape can make one
            if half is not None:
                errors.append(LineError(path, n, f"holds \\u{ord(half):04x}, half of a UTF-16 surrogate pair, not "
                                                 "text; write the whole character (or both halves)"))
                continue
            rows.append((n, obj))
    return rows, errors


def lone_surrogate(value) -> str | None:
    """The first lone surrogate in any string (key or value) of a parsed JSON value, or None."""
    if isinstance(value, str):
        found = _SURROGATE.search(value)
        return found.group() if found else None
    items = [*value.keys(), *value.values()] if isinstance(value, dict) else value if isinstance(value, list) else ()
    for item in items:
        found = lone_surrogate(item)
        if found is not None:
            return found
    return None
