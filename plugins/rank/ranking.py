"""A ranking of candidate answers, and the editing state behind the ranking screen.

A :class:`Ranking` is what gets stored: ``tiers`` lists candidate indexes best
first, each tier a group of answers judged equal (a tie), plus a ``status``:
"ranked", "all_bad" (no answer is acceptable: no preference pairs, and every
answer is a negative example) or "skipped" (no judgement). Candidates the person
did not place share the last tier.

:class:`RankingDraft` is the keyboard model, free of any UI: number keys
:meth:`pick` the next best (again: take it back), :meth:`move` shifts an answer
up or down among the placed ones, :meth:`toggle_tie` ties an answer with the one
above it, :meth:`toggle_all_bad`, and :meth:`result` validates and freezes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chatcli.errors import UsageError

STATUSES = ("ranked", "all_bad", "skipped")


@dataclass(frozen=True)
class Ranking:
    tiers: tuple[tuple[int, ...], ...]  # best first; a tier with several indexes is a tie
    status: str = "ranked"
    note: str = ""
    duration_s: float | None = None  # how long the person looked before submitting

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"bad ranking status {self.status!r}")

    @property
    def order(self) -> list[int]:
        return [i for tier in self.tiers for i in tier]

    @property
    def best(self) -> tuple[int, ...]:
        """The answers judged best (several when tied); none for all-bad or skipped."""
        return self.tiers[0] if self.status == "ranked" and self.tiers else ()

    @property
    def ties(self) -> int:
        """How many tiers hold a tie."""
        return sum(1 for t in self.tiers if len(t) > 1)

    def tier_of(self) -> dict[int, int]:
        """candidate index -> its tier (0 = best)."""
        return {i: k for k, tier in enumerate(self.tiers) for i in tier}

    def to_json(self) -> dict:
        return {"tiers": [list(t) for t in self.tiers], "status": self.status, "note": self.note, "duration_s": self.duration_s}

    @classmethod
    def from_json(cls, d: dict) -> "Ranking":
        return cls(tuple(tuple(int(i) for i in t) for t in d.get("tiers", [])), d.get("status", "ranked"),
                   d.get("note", "") or "", d.get("duration_s"))  # fmt: skip


@dataclass
class RankingDraft:
    """The ranking being made: ``order`` shows every answer, the first ``placed`` are ranked."""

    n: int
    order: list[int] = field(default_factory=list)
    placed: int = 0
    tied: set[int] = field(default_factory=set)  # answers tied with the one above them
    all_bad: bool = False
    note: str = ""

    def __post_init__(self) -> None:
        if not self.order:
            self.order = list(range(self.n))

    def is_placed(self, i: int) -> bool:
        return i in self.order[: self.placed]

    def position(self, i: int) -> int:
        return self.order.index(i)

    def pick(self, i: int) -> None:
        """Place answer ``i`` as the next best; picking a placed answer takes it back."""
        if not 0 <= i < self.n:
            raise UsageError(f"there is no answer {i + 1}; pick 1 to {self.n}")
        was_placed = self.is_placed(i)
        self.order.remove(i)
        if was_placed:
            self.placed -= 1
            self.order.insert(self.placed, i)  # back to the top of the unplaced ones
            self.tied.discard(i)
        else:
            self.order.insert(self.placed, i)
            self.placed += 1
            if self.placed == self.n - 1:  # one answer left: it is the last, no key needed
                self.placed = self.n
        self._fix_ties()

    def move(self, i: int, delta: int) -> bool:
        """Move answer ``i`` one place up (-1) or down (+1); False when it cannot move."""
        pos = self.position(i)
        if not self.is_placed(i):
            if delta < 0:  # an unplaced answer moving up joins the ranking at the end
                self.pick(i)
                return True
            return False
        new = pos + delta
        if new < 0:
            return False
        if new >= self.placed:  # the last placed answer moving down leaves the ranking
            self.placed -= 1
            self.tied.discard(i)
            self._fix_ties()
            return True
        self.order[pos], self.order[new] = self.order[new], self.order[pos]
        self._fix_ties()
        return True

    def toggle_tie(self, i: int) -> bool:
        """Tie a placed answer with the one above it (or undo); False when that is impossible."""
        if not self.is_placed(i) or self.position(i) == 0:
            return False
        if i in self.tied:
            self.tied.discard(i)
        else:
            self.tied.add(i)
        return True

    def toggle_all_bad(self) -> None:
        self.all_bad = not self.all_bad

    def tiers(self) -> list[list[int]]:
        out: list[list[int]] = []
        for k, i in enumerate(self.order[: self.placed]):
            if k > 0 and i in self.tied:
                out[-1].append(i)
            else:
                out.append([i])
        rest = self.order[self.placed :]
        if rest:
            out.append(list(rest))  # unplaced answers share the last place
        return out

    def result(self, duration_s: float | None = None) -> Ranking:
        """The ranking to store; raises UsageError when nothing was ranked yet."""
        tiers = tuple(tuple(t) for t in self.tiers())
        if self.all_bad:
            return Ranking(tiers, "all_bad", self.note.strip(), duration_s)
        if self.placed == 0:
            raise UsageError("rank at least the best answer (its number key), or mark all bad (b), or skip (s)")
        return Ranking(tiers, "ranked", self.note.strip(), duration_s)

    def _fix_ties(self) -> None:
        # The top placed answer has nobody above it, and unplaced answers tie with nothing.
        placed = self.order[: self.placed]
        self.tied = {i for i in self.tied if i in placed and placed.index(i) > 0}
