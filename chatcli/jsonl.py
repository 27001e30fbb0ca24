"""JSON Lines input for the plugins' data files: one object per line, bad lines named by number.

Contract: :func:`read_objects` returns ``(line number, object)`` for every non-blank
line holding a JSON object and a :class:`LineError` (``FILE:LINE: what``) for every
other non-blank line; callers add their own per-record errors with the same class and
decide to skip the bad lines or refuse the file (``--strict``). A file that cannot be
opened, or (with the default strict decoding) is not UTF-8, is a :class:`UsageError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from chatcli.errors import UsageError


@dataclass(frozen=True)
class LineError:
    path: Path | str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def read_objects(path: Path | str, *, decode_errors: str = "strict") -> tuple[list[tuple[int, dict]], list[LineError]]:
    """The JSON objects of ``path`` by line number, and the lines that are not objects.

    ``decode_errors`` is :func:`open`'s ``errors``: "strict" refuses a file that is not
    UTF-8, "replace" reads it with U+FFFD in place of the bad bytes.
    """
    path = Path(path)
    try:
        f = open(path, encoding="utf-8", errors=decode_errors)
    except OSError as e:
        raise UsageError(f"cannot read {path} ({e.strerror or e})") from None
    rows: list[tuple[int, dict]] = []
    errors: list[LineError] = []
    with f:
        try:
            for n, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError as e:
                    errors.append(LineError(path, n, f"not valid JSON ({e.msg} at column {e.colno})"))
                    continue
                if not isinstance(obj, dict):
                    errors.append(LineError(path, n, "not a JSON object"))
                    continue
                rows.append((n, obj))
        except UnicodeDecodeError as e:
            raise UsageError(f"{path} is not UTF-8 text ({e.reason}); save it as UTF-8") from None
    return rows, errors
