"""How consistent the person's rankings are with each other: contradictions and Kendall's τ.

A teacher who ranks A over B one time and B over A the next pulls the student
both ways; this module finds where that happened.

* Texts are compared after whitespace normalisation (:func:`normalise`: runs of
  whitespace become one space, the ends are stripped), so an answer re-generated
  with other line breaks is the same answer. Prompts are the conversation up to
  the last user turn, normalised the same way (:func:`prompt_key`).
* Every submission of status "ranked" counts, re-rankings of the same set
  included: a changed mind is also a contradiction. ``latest`` marks the
  rankings exports (and so training) use; a contradiction whose two directions
  both come from latest rankings is ``in_export``: the training data holds both.
* A **contradiction** is a pair of texts of one prompt ranked both ways (one
  above the other in one ranking, below it in another), or one text placed in
  two different tiers of the same ranking (two candidates that say the same).
* **Repeated prompts**: every two rankings of one prompt are compared with
  Kendall's τ-b (:func:`kendall_tau`, as ``scipy.stats.kendalltau`` computes it)
  over the texts both ranked; a text's place is its tier (ties share one).
  τ is 1 for the same order, -1 for the reverse, None when undefined (fewer than
  two shared texts, or one ranking ties all of them).

:func:`conflicts` checks a ranking being made (the ranking screen's draft)
against the earlier ones, for the notice the screen shows before it is stored.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

from chatcli_rank.ranking import Ranking


def normalise(text: str) -> str:
    return " ".join(text.split())


def _prompt_messages(messages: Sequence[dict]) -> list[dict]:
    last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=len(messages) - 1)
    return list(messages[: last + 1])


def prompt_key(messages: Sequence[dict]) -> str:
    """A hash of the normalised conversation up to the last user turn."""
    rows = [[m.get("role", ""), normalise(str(m.get("content", "")))] for m in _prompt_messages(messages)]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def question(messages: Sequence[dict]) -> str:
    """The last user message (what a report shows to name the prompt)."""
    return next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")


def date(ts: float) -> str:
    """A submission time as local ISO 8601 with its offset (seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ts))


@dataclass(frozen=True)
class Judgement:
    """One "ranked" submission, reduced to what consistency needs."""

    ranking_id: int
    set_id: int
    created: float
    prompt: str  # prompt_key
    question: str
    places: dict[str, int]  # normalised text -> its tier (0 = best; a text given twice: its best tier)
    repeated: tuple[str, ...] = ()  # texts this ranking put in more than one tier
    latest: bool = True

    def ref(self) -> dict:
        return {"ranking_id": self.ranking_id, "set_id": self.set_id, "date": date(self.created), "latest": self.latest}


def judgement(ranking_id: int, set_id: int, created: float, messages: Sequence[dict], texts: Sequence[str],
              ranking: Ranking, latest: bool = True) -> Judgement | None:  # fmt: skip
    """The judgement a ranking makes; None when it ranks nothing (all bad, skipped)."""
    if ranking.status != "ranked":
        return None
    places, tiers_of = _places(texts, [list(t) for t in ranking.tiers])
    repeated = tuple(sorted(t for t, tiers in tiers_of.items() if len(tiers) > 1))
    return Judgement(ranking_id, set_id, created, prompt_key(messages), question(messages), places, repeated, latest)


def _places(texts: Sequence[str], tiers: Sequence[Sequence[int]]) -> tuple[dict[str, int], dict[str, set[int]]]:
    tiers_of: dict[str, set[int]] = defaultdict(set)
    for k, tier in enumerate(tiers):
        for i in tier:
            if 0 <= i < len(texts):
                tiers_of[normalise(texts[i])].add(k)
    return {t: min(ks) for t, ks in tiers_of.items()}, tiers_of


def judgements(submissions) -> list[Judgement]:
    """Judgements of :meth:`RankStore.submissions` (skipped and all-bad rankings left out)."""
    out = []
    for s in submissions:
        j = judgement(s.ranking_id, s.set_id, s.created, s.messages, s.texts, s.ranking, s.latest)
        if j is not None:
            out.append(j)
    return out


# --- contradictions ---------------------------------------------------------------------------


def contradictions(js: Sequence[Judgement]) -> list[dict]:
    """Pairs of texts of one prompt ranked both ways, and texts placed in two tiers of one ranking."""
    votes: dict[tuple[str, str, str], dict[int, list[Judgement]]] = defaultdict(lambda: {1: [], -1: []})
    for j in js:
        for a, b in combinations(sorted(j.places), 2):
            if j.places[a] != j.places[b]:
                votes[(j.prompt, a, b)][1 if j.places[a] < j.places[b] else -1].append(j)
    out = []
    for (prompt, a, b), v in votes.items():
        if v[1] and v[-1]:
            out.append(_contradiction(v[1][0].question, a, b, v[1], v[-1]))
    for j in js:
        for t in j.repeated:
            out.append(_contradiction(j.question, t, t, [j], [j]))
    return sorted(out, key=lambda c: (c["a_over_b"][0]["ranking_id"], c["b_over_a"][0]["ranking_id"], c["a"], c["b"]))


def _contradiction(q: str, a: str, b: str, up: list[Judgement], down: list[Judgement]) -> dict:
    return {
        "question": q, "a": a, "b": b, "same_text": a == b,
        "a_over_b": [j.ref() for j in up], "b_over_a": [j.ref() for j in down],
        "in_export": any(j.latest for j in up) and any(j.latest for j in down),
    }  # fmt: skip


# --- agreement between rankings of one prompt ---------------------------------------------------


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's τ-b of two rankings of the same items (lower = better; equal values tie).

    τ-b = (concordant - discordant) / sqrt((n0 - tied_x) (n0 - tied_y)), n0 = n(n-1)/2;
    None when that denominator is 0 (scipy returns nan there).
    """
    if len(x) != len(y):
        raise ValueError("kendall_tau needs two rankings of the same items")
    n0 = len(x) * (len(x) - 1) // 2
    concordant = discordant = tied_x = tied_y = 0
    for i, j in combinations(range(len(x)), 2):
        dx, dy = _sign(x[i] - x[j]), _sign(y[i] - y[j])
        tied_x += dx == 0
        tied_y += dy == 0
        concordant += dx * dy > 0
        discordant += dx * dy < 0
    denom = math.sqrt((n0 - tied_x) * (n0 - tied_y))
    return (concordant - discordant) / denom if denom else None


def _sign(v: float) -> int:
    return (v > 0) - (v < 0)


def repeated_prompts(js: Sequence[Judgement]) -> list[dict]:
    """For every prompt ranked more than once: τ between each two of its rankings, over the texts both ranked."""
    by_prompt: dict[str, list[Judgement]] = defaultdict(list)
    for j in js:
        by_prompt[j.prompt].append(j)
    out = []
    for group in by_prompt.values():
        for first, second in combinations(group, 2):
            shared = sorted(set(first.places) & set(second.places))
            tau = kendall_tau([first.places[t] for t in shared], [second.places[t] for t in shared]) if len(shared) > 1 else None
            out.append({"question": first.question, "first": first.ref(), "second": second.ref(),
                        "shared_texts": len(shared), "tau": tau})  # fmt: skip
    return sorted(out, key=lambda r: (r["first"]["ranking_id"], r["second"]["ranking_id"]))


def mean_tau(rows: Sequence[dict]) -> float | None:
    taus = [r["tau"] for r in rows if r["tau"] is not None]
    return sum(taus) / len(taus) if taus else None


# --- a ranking being made -----------------------------------------------------------------------


@dataclass(frozen=True)
class Conflict:
    """The draft puts candidate ``above`` over candidate ``below``; ``earlier`` put them the other way
    (``above == below`` is impossible; equal texts at two places of the draft have ``earlier`` None)."""

    above: int
    below: int
    earlier: Judgement | None

    def describe(self) -> str:
        here = f"{self.above + 1} > {self.below + 1}"
        if self.earlier is None:
            return f"answers {self.above + 1} and {self.below + 1} say the same but are ranked {here}"
        when = date(self.earlier.created).replace("T", " ")[:16]
        return f"{here} here, but ranking #{self.earlier.ranking_id} ({when}) put {self.below + 1} above {self.above + 1}"


def conflicts(earlier: Sequence[Judgement], messages: Sequence[dict], texts: Sequence[str],
              tiers: Sequence[Sequence[int]]) -> list[Conflict]:  # fmt: skip
    """Where ranking ``texts`` as ``tiers`` (best first, candidate indexes) contradicts ``earlier``
    judgements of the same prompt, or ranks two equal texts apart."""
    key = prompt_key(messages)
    tier_of = {i: k for k, tier in enumerate(tiers) for i in tier}
    norm = [normalise(t) for t in texts]
    out: list[Conflict] = []
    mine = [j for j in earlier if j.prompt == key]
    for a, b in combinations(sorted(tier_of), 2):
        if tier_of[a] == tier_of[b]:
            continue
        above, below = (a, b) if tier_of[a] < tier_of[b] else (b, a)
        if norm[above] == norm[below]:
            out.append(Conflict(above, below, None))
            continue
        for j in mine:
            pa, pb = j.places.get(norm[above]), j.places.get(norm[below])
            if pa is not None and pb is not None and pb < pa:
                out.append(Conflict(above, below, j))
                break  # one earlier ranking is enough to name
    return out
