"""Streaming ids -> text without ever showing half a character, and holding back stop strings.

:class:`IncrementalDetokenizer` turns ids pushed one at a time into text pieces.
A token may carry only some of the bytes of a character (Chinese, emoji), so a
piece whose decode ends in U+FFFD is held back until the character completes.
Contract: ``"".join(pushes) + flush() == tokenizer.decode(all ids)``. (One exception:
with a byte-fallback tokenizer, a model that emits an invalid byte sequence makes
``decode`` replace the whole run of byte tokens with U+FFFD after the valid part was
already shown; the stream keeps what it showed.)

It decodes a sliding window, as vLLM does: ``prefix`` is the start of the window,
``read`` the end of what was emitted; both start at a character boundary, so the
window decodes the same as the full sequence would (decoders that strip a leading
space strip it from both decodes alike). Cost per push is O(window), not O(answer).

:class:`StopStringHolder` holds back text that might be the start of a stop string
until it is decided, and reports the text before a stop string once one completes.
"""

from __future__ import annotations

from typing import Protocol, Sequence

REPLACEMENT = "\ufffd"


class _Decoder(Protocol):
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str: ...


class IncrementalDetokenizer:
    """Feed ids with :meth:`push`; each call returns the text that became final."""

    def __init__(self, tokenizer: _Decoder, skip_special_tokens: bool = False):
        self._tok = tokenizer
        self._skip = skip_special_tokens
        self.ids: list[int] = []
        self._prefix = 0  # window start (a character boundary)
        self._read = 0  # ids up to here have been emitted as text
        self._emitted: list[str] = []

    @property
    def text(self) -> str:
        """Everything emitted so far."""
        return "".join(self._emitted)

    @property
    def pending(self) -> bool:
        """Whether ids were pushed whose text is not out yet (bytes of an unfinished character)."""
        return self._read < len(self.ids)

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=self._skip)

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        prefix_text = self._decode(self.ids[self._prefix : self._read])
        new_text = self._decode(self.ids[self._prefix :])
        if new_text.endswith(REPLACEMENT) or len(new_text) <= len(prefix_text):
            # Bytes of an unfinished character, or nothing visible yet: wait for more ids.
            return ""
        return self._emit(prefix_text, new_text)

    def flush(self) -> str:
        """The rest of the text (a trailing incomplete character shows as U+FFFD, as decode does)."""
        prefix_text = self._decode(self.ids[self._prefix : self._read])
        new_text = self._decode(self.ids[self._prefix :])
        return self._emit(prefix_text, new_text) if len(new_text) > len(prefix_text) else ""

    def _emit(self, prefix_text: str, new_text: str) -> str:
        # Byte-fallback decoders (SentencePiece) turn a whole run of byte tokens into U+FFFDs once
        # the run turns out to be invalid UTF-8, rewriting text already shown; what was shown stays
        # and the new piece is whatever follows the same number of characters.
        piece = new_text[len(prefix_text) :]
        self._prefix, self._read = self._read, len(self.ids)
        self._emitted.append(piece)
        return piece


def find_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index where the earliest stop string in ``text`` starts, or None."""
    hits = [i for s in stops if s and (i := text.find(s)) >= 0]
    return min(hits) if hits else None


def partial_stop_len(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of some stop string
    (text that must be held back because the next token may complete a stop string)."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


class StopStringHolder:
    """Hold back text that may begin a stop string; find the first stop string that completes."""

    def __init__(self, stops: Sequence[str]):
        self.stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False

    @property
    def held(self) -> str:
        return self._held

    def push(self, text: str) -> tuple[str, bool]:
        """Add text; return (text now safe to show, whether a stop string completed).

        When a stop string completes, the returned text is everything before it and the
        holder is finished (later pushes return nothing).
        """
        if self.stopped:
            return "", True
        buf = self._held + text
        start = find_stop(buf, self.stops)
        if start is not None:
            self._held = ""
            self.stopped = True
            return buf[:start], True
        keep = partial_stop_len(buf, self.stops)
        self._held = buf[len(buf) - keep :]
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        """Release held text at the end of generation (no stop string completed)."""
        out, self._held = self._held, ""
        return "" if self.stopped else out
