"""Sampled tokens -> :class:`Step` events: one answer's text, stop strings and end-of-sequence.

:class:`AnswerBuilder` receives each sampled token with its statistics and decides
when its Step can be yielded and what text it carries. A step is held (not yet
yielded) while its text is undecided: while it might be the start of a stop string,
or while its bytes are part of an unfinished character. So each Step's ``text`` is
exactly that token's own contribution to the answer, and

* when a stop string completes, the tokens that make it up are never yielded; a
  token that holds answer text *and* the beginning of the stop string is yielded
  with the answer part only; held text before the stop string is released;
* an end-of-sequence id ends the answer and is not a step;
* :meth:`finish` (length, cancel, error) releases everything still held, so the
  concatenated step texts always equal :attr:`text`, the answer.

Holding costs latency only for the held tokens (typically a byte or two of a
character, or a newline when a stop string starts with one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from chatcli.tokenizer.detokenizer import IncrementalDetokenizer, find_stop, partial_stop_len
from chatcli.engine.events import Step, TopToken


@dataclass
class _Held:
    id: int
    prob: float
    model_prob: float
    entropy: float
    top: tuple[TopToken, ...]
    start: int  # this token's piece is buf[start:end]
    end: int


class AnswerBuilder:
    """Builds one answer (one ``seq`` of a batch) from sampled tokens."""

    def __init__(
        self,
        tokenizer,
        stops: Sequence[str] = (),
        eos_ids: Iterable[int] = (),
        seq: int = 0,
        prime_ids: Sequence[int] = (),
    ):
        self._tok = tokenizer
        self.stops = tuple(s for s in stops if s)
        self.eos_ids = frozenset(eos_ids)
        self.seq = seq
        self._detok = IncrementalDetokenizer(tokenizer)
        for i in prime_ids:  # an answer prefix already shown: decode continues after it
            self._detok.push(i)
        self._held: list[_Held] = []
        self._buf = ""  # text of the held tokens, not yet yielded
        self._parts: list[str] = []
        self.ids: list[int] = []  # ids of the yielded steps
        self.done = False
        self.stopped = False  # ended by an end-of-sequence id or a stop string

    @property
    def text(self) -> str:
        """The answer so far: the concatenated text of the yielded steps."""
        return "".join(self._parts)

    @property
    def count(self) -> int:
        """Steps yielded so far."""
        return len(self.ids)

    def add(
        self, token_id: int, prob: float, model_prob: float, entropy: float, top: tuple[TopToken, ...]
    ) -> tuple[list[Step], bool]:
        """Take a sampled token; return the steps now ready and whether the answer ended."""
        if self.done:
            return [], True
        if token_id in self.eos_ids:
            self.stopped = True
            return self.finish(), True
        piece = self._detok.push(token_id)
        start = len(self._buf)
        self._buf += piece
        self._held.append(_Held(token_id, prob, model_prob, entropy, top, start, len(self._buf)))

        stop_at = find_stop(self._buf, self.stops)
        if stop_at is not None:
            # Tokens starting at or after the stop string are part of it (a byte token of its
            # first character has an empty piece right at stop_at); a straddler keeps its head.
            out = [self._step(h, self._buf[h.start : min(h.end, stop_at)]) for h in self._held if h.start < stop_at]
            self._held, self._buf = [], ""
            self.done = self.stopped = True
            return out, True

        safe = len(self._buf) - partial_stop_len(self._buf, self.stops)
        ready = 0
        for h in self._held:
            # A byte token with an empty piece belongs to the character that starts where it
            # sits: it goes out with that character (and waits while the character is pending).
            if h.end > safe or (h.start == h.end and h.start >= safe):
                break
            ready += 1
        return self._release(ready), False

    def finish(self) -> list[Step]:
        """End the answer (any reason): release every held step with its text."""
        if self.done:
            return []
        tail = self._detok.flush()  # U+FFFD for bytes of a character that never completed
        if tail and self._held:
            self._buf += tail
            self._held[-1].end = len(self._buf)
        out = self._release(len(self._held))
        self.done = True
        return out

    def _release(self, n: int) -> list[Step]:
        if n == 0:
            return []
        released, self._held = self._held[:n], self._held[n:]
        out = [self._step(h, self._buf[h.start : h.end]) for h in released]
        cut = released[-1].end
        self._buf = self._buf[cut:]
        for h in self._held:
            h.start -= cut
            h.end -= cut
        return out

    def _step(self, h: _Held, text: str) -> Step:
        step = Step(
            index=len(self.ids),
            id=h.id,
            token=self._tok.token_text(h.id),
            text=text,
            prob=h.prob,
            model_prob=h.model_prob,
            entropy=h.entropy,
            top=h.top,
            seq=self.seq,
        )
        self.ids.append(h.id)
        self._parts.append(text)
        return step
