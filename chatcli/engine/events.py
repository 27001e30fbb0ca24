"""The events the engine yields while it generates: the contract every front end reads.

One :class:`Step` per generated token (the stop token is not a step), then one
:class:`Done`. ``to_json()`` gives the objects ``chatcli generate --json`` prints.

A backend that knows less than the local engine (a remote OpenAI-compatible
server) says so in the values rather than inventing them: a probability it was
not given is NaN in memory and ``null`` in JSON, a token id it was not given is
negative (:func:`text_token_id`, ``null`` in JSON), and a step whose entropy and
alternatives cover only the top tokens the server returned has ``partial=True``.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True)
class TopToken:
    """One of the most probable tokens of the raw model distribution at a step."""

    id: int
    token: str  # the token's own text (U+FFFD where it holds part of a character)
    prob: float  # probability in the distribution actually sampled from
    model_prob: float  # probability under the raw model distribution (softmax, T=1)

    def to_json(self) -> dict:
        return {"id": _id(self.id), "token": self.token, "prob": _num(self.prob), "model_prob": _num(self.model_prob)}


@dataclass(frozen=True)
class Step:
    """One generated token and the distribution it was drawn from.

    ``text`` is what this step adds to the answer: UTF-8 safe (bytes of an
    unfinished character are held back), and text that might begin a stop string
    is held back until decided, so it may be empty. Concatenating ``text`` over
    all steps gives the answer.
    """

    index: int
    id: int
    token: str
    text: str
    prob: float
    model_prob: float
    entropy: float  # bits, of the raw model distribution
    top: tuple[TopToken, ...]
    seq: int = 0  # which sequence of a batched generation (0 for a single answer)
    partial: bool = False  # entropy and top cover only the alternatives a remote server returned

    @property
    def rank(self) -> int | None:
        """1-based rank of the chosen token in the raw distribution, if it is in ``top``."""
        for i, t in enumerate(self.top):
            if t.id == self.id:
                return i + 1
        return None

    def to_json(self) -> dict:
        out = {
            "type": "step",
            "index": self.index,
            "id": _id(self.id),
            "token": self.token,
            "text": self.text,
            "prob": _num(self.prob),
            "model_prob": _num(self.model_prob),
            "entropy": _num(self.entropy),
            "top": [t.to_json() for t in self.top],
        }
        if self.partial:  # only then: the local engine's objects keep their documented keys
            out["partial"] = True
        return out


@dataclass(frozen=True)
class Done:
    """The end of one answer."""

    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float | None  # request start (model loaded) -> first step
    tokens_per_s: float | None  # decode speed after the first token
    text: str = ""  # the whole answer (the stop string and stop token excluded)
    error: str | None = None
    prefilled_tokens: int = 0  # tokens actually forwarded for the prompt (rest came from the cache)
    seq: int = 0

    def to_json(self) -> dict:
        out = {
            "type": "done",
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "ttft_s": self.ttft_s,
            "tokens_per_s": self.tokens_per_s,
        }
        if self.error:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class Notice:
    """Something the person should know that is not part of the answer (dropped turns, ...)."""

    message: str
    kind: str = "info"
    data: dict = field(default_factory=dict)


Event = Step | Done | Notice

UNKNOWN = math.nan  # a probability or entropy the backend did not report


def known(x: float) -> bool:
    """False for a value the backend did not report (NaN)."""
    return not math.isnan(x)


def text_token_id(token: str) -> int:
    """A stand-in id for a token whose real id the server did not give: negative (so it is
    never taken for a vocabulary id; ``null`` in JSON) and the same for the same text, so
    the chosen token is still found among the alternatives (rank, the panel's marker)."""
    return -2 - zlib.crc32(token.encode("utf-8", "surrogatepass"))


def _num(x: float) -> float | None:
    return None if math.isnan(x) else x


def _id(i: int) -> int | None:
    return i if i >= 0 else None
