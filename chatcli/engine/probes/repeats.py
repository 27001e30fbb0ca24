"""Is decoding repeating itself? An incremental detector fed one token at a time.

:class:`RepeatDetector` sees the answer's tokens as they are generated and fires at
most once: when the same n-gram of ``n`` tokens (default 4) has come ``times`` times
(default 3) without overlapping itself. A single token repeated (``the the the ...``)
is caught by the same rule: 3 × 4 = 12 in a row. Each :meth:`RepeatDetector.push` is
O(1) (one tuple, one dict look-up); only the firing push, once per answer, looks back
over the answer to describe what repeats.

What it reports (:class:`Repeat`): the repeated unit (its token ids and text), the
token index where its first copy starts, and how many copies there are so far. When
the copies follow each other (a tandem loop: ``A B C D E A B C D E A B C D``) the
unit is the whole repeating block reduced to its shortest period (``the`` for a run
of ``the``); when other tokens sit between the copies (``1. the cat 2. the cat 3. the
cat``) it is the longest run of tokens the three copies share around the n-gram.

Pure: token ids (and optionally each token's text) in, a :class:`Repeat` out; no
model, no tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Repeat:
    """What repeats: ``ids`` (the unit), its ``text``, where its first copy starts and how many copies."""

    start: int  # token index (within everything pushed) where the first copy begins
    ids: tuple[int, ...]  # the repeated unit
    text: str  # the unit's text (the pushed texts joined; "" when none were given)
    copies: int  # copies of the unit so far (the n-gram's non-overlapping occurrences, or a run's length)
    at: int  # token index of the push that fired (the end of the last copy seen)

    def to_json(self) -> dict:
        return {"start": self.start, "tokens": len(self.ids), "ids": list(self.ids), "text": self.text,
                "copies": self.copies, "at": self.at}  # fmt: skip


class RepeatDetector:
    """Fires once when an n-gram of ``n`` tokens has occurred ``times`` times, non-overlapping."""

    def __init__(self, n: int = 4, times: int = 3) -> None:
        if n < 1 or times < 2:
            raise ValueError("a repeat needs n >= 1 tokens seen times >= 2 times")
        self.n = n
        self.times = times
        self.ids: list[int] = []
        self.texts: list[str] = []
        # n-gram -> [non-overlapping occurrences counted, start of the last counted one, starts counted]
        self._seen: dict[tuple[int, ...], list] = {}
        self.fired: Repeat | None = None

    def push(self, token_id: int, text: str = "") -> Repeat | None:
        """Add the next token; return a :class:`Repeat` the one time the rule is first met."""
        self.ids.append(token_id)
        self.texts.append(text)
        if self.fired is not None or len(self.ids) < self.n:
            return None
        start = len(self.ids) - self.n
        gram = tuple(self.ids[start:])
        entry = self._seen.get(gram)
        if entry is None:
            self._seen[gram] = [1, start, [start]]
            return None
        if start < entry[1] + self.n:  # overlaps the copy counted last (a run): not a new copy yet
            return None
        entry[0] += 1
        entry[1] = start
        entry[2].append(start)
        if entry[0] < self.times:
            return None
        self.fired = self._describe(entry[2][-self.times :])
        return self.fired

    def prime(self, ids, texts=None) -> None:
        """Tokens already in the answer (a continued one): counted, and a repeat among them
        alone marks the answer as already reported (it is not announced again)."""
        texts = list(texts) if texts is not None else [""] * len(ids)
        for i, t in zip(ids, texts):
            self.push(int(i), t)

    # --- the one look-back, when it fires ------------------------------------------------------

    def _describe(self, starts: list[int]) -> Repeat:
        ids, end = self.ids, len(self.ids)
        last, gap = starts[-1], starts[-1] - starts[-2]
        if _periodic(ids, max(0, starts[-2] - gap), end, gap):  # three copies back to back
            # A loop: from the last copies on, the tokens repeat with this period. Reduce it to
            # the shortest period (a run of one token has period 1) and follow it back to where
            # the loop began.
            period = next(p for p in range(1, gap + 1) if _periodic(ids, max(0, starts[-2] - gap), end, p))
            begin = starts[-2]
            while begin > 0 and ids[begin - 1] == ids[begin - 1 + period]:
                begin -= 1
            a, b = begin, begin + period
            copies = max(len(starts), -(-(end - begin) // period))  # copies begun, the last maybe partial
            start = min(begin, starts[0])
        else:
            # Copies apart (other tokens between them): the longest stretch the copies share
            # around the n-gram, without running into the next copy. The last copy has just
            # begun: after its n-gram, the stretch goes on as far as the earlier copies agree.
            lo, hi = 0, self.n
            limit = min(b - a for a, b in zip(starts, starts[1:]))
            while lo < starts[0] and hi - lo < limit and len({ids[s - lo - 1] for s in starts}) == 1:
                lo += 1
            while hi - lo < limit and len({ids[s + hi] for s in starts if s + hi < end}) == 1:
                hi += 1
            a, b = starts[0] - lo, starts[0] + hi
            copies, start = len(starts), a
        return Repeat(start=start, ids=tuple(ids[a:b]), text="".join(self.texts[a:b]), copies=copies, at=end - 1)


def _periodic(ids: list[int], start: int, end: int, period: int) -> bool:
    """ids[start:end] repeats with ``period`` (every token equals the one ``period`` before it)."""
    return all(ids[i] == ids[i - period] for i in range(start + period, end))
