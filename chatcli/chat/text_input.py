"""Text a person typed, piped or passed on the command line, made safe for the tokenizer and the store.

Contract: :func:`clean_text` returns the text with every lone surrogate replaced by
U+FFFD and says whether it replaced any. Lone surrogates are how Python carries
bytes that are not UTF-8 (``surrogateescape``: a non-UTF-8 argv, a stream read with
that error handler) or a broken ``"\\ud83d"`` escape; neither the tokenizer nor
SQLite accepts them, so one such line would fail the message and, kept in the
conversation, every later turn. :func:`tolerant` makes a text stream hand over
undecodable bytes as such surrogates instead of raising, so :func:`clean_text`
sees (and can report) them.

Interactive input is replaced, not refused: a person who pasted one bad byte
should still get an answer. Data files are refused instead (:mod:`chatcli.jsonl`).
"""

from __future__ import annotations

import io
import re
from typing import IO

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> tuple[str, bool]:
    """``text`` with lone surrogates as U+FFFD, and whether there were any."""
    cleaned, count = _SURROGATE.subn(REPLACEMENT, text)
    return cleaned, count > 0


def tolerant(stream: IO[str]) -> IO[str]:
    """Let ``stream`` (a text stream such as ``sys.stdin``) pass undecodable bytes on as surrogates.

    Streams that cannot be reconfigured (a ``StringIO``) hold text already and are
    returned unchanged.
    """
    if isinstance(stream, io.TextIOWrapper):
        try:
            stream.reconfigure(errors="surrogateescape")
        except (ValueError, OSError):  # a closed or detached stream: nothing to read anyway
            pass
    return stream

