"""Engine events -> OpenAI response bodies: chat completions, (legacy) completions, their chunks.

:class:`Formatter` builds, for one request, the objects of OpenAI's wire format:

* chat: ``chat.completion`` / ``chat.completion.chunk`` with ``logprobs.content[i] =
  {token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}``;
* completions: ``text_completion`` with the legacy ``{tokens, token_logprobs,
  top_logprobs: [{token: logprob}], text_offset}`` (the chosen token is always in its
  ``top_logprobs`` dict, so it holds up to k+1 entries, as OpenAI documents).

Logprobs are those of the raw model distribution (``Step.model_prob``, temperature 1),
as vLLM returns by default; a probability of 0 becomes -9999.0 (vLLM's floor), since
JSON has no -Infinity. ``token`` is the token's own text (U+FFFD where it holds part of
a character; ``bytes`` has the exact bytes). Text offsets count characters of the
answer emitted before the token.

With ``echo`` (completions), a choice's text and logprobs start with its prompt's
(:class:`PromptEcho`, made by :mod:`chatcli.serve.prompt_echo`: the first prompt token's
logprob and top_logprobs are null); prompt tokens' offsets add up their texts, and the answer's
offsets count from the end of the prompt's text. ``prompt_tokens``, when the app sets it,
is the usage's prompt count (a batch of prompts counts each once).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from chatcli.engine.events import Done, Step

LOGPROB_FLOOR = -9999.0


def logprob(p: float) -> float:
    return max(math.log(p), LOGPROB_FLOOR) if p > 0 else LOGPROB_FLOOR


@dataclass(frozen=True)
class PromptEcho:
    """One completion choice's echoed prompt: an event the app yields before the choice's tokens."""

    seq: int  # the choice it opens
    text: str  # the prompt as sent (token ids: their decoded text)
    tokens: tuple[str, ...]  # each prompt token's own text
    logprobs: tuple[float | None, ...] | None  # None when logprobs were not asked for; [0] is None
    top: tuple[dict[str, float] | None, ...] | None  # the k alternatives and the token itself; [0] is None

    def for_choice(self, seq: int) -> PromptEcho:
        return replace(self, seq=seq)


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}  # fmt: skip


class Formatter:
    """The bodies of one request's answer; ``chat`` picks the chat or the legacy format."""

    def __init__(self, model: str, chat: bool, logprobs: bool, top: int, token_bytes: Callable[[int], bytes],
                 include_usage: bool = False):  # fmt: skip
        self.model = model
        self.chat = chat
        self.logprobs = logprobs
        self.top = top
        self.token_bytes = token_bytes
        self.include_usage = include_usage
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.offsets: dict[int, int] = {}  # seq -> characters streamed so far (legacy text_offset)
        self.prompt_tokens: int | None = None  # the usage's prompt tokens (else the first Done's)

    # ---- logprobs ------------------------------------------------------------------------------

    def _entry(self, step: Step) -> dict:
        return {
            "token": step.token,
            "logprob": logprob(step.model_prob),
            "bytes": list(self.token_bytes(step.id)),
            "top_logprobs": [
                {"token": t.token, "logprob": logprob(t.model_prob), "bytes": list(self.token_bytes(t.id))}
                for t in step.top[: self.top]
            ],
        }

    def _legacy(self, steps: Sequence[Step], seq: int) -> dict:
        out: dict = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for s in steps:
            top = {t.token: logprob(t.model_prob) for t in s.top[: self.top]}
            top[s.token] = logprob(s.model_prob)  # the chosen token always (its text may repeat in top)
            out["tokens"].append(s.token)
            out["token_logprobs"].append(logprob(s.model_prob))
            out["top_logprobs"].append(top)
            out["text_offset"].append(self.offsets.get(seq, 0))
            self.offsets[seq] = self.offsets.get(seq, 0) + len(s.text)
        return out

    def _echo_legacy(self, echo: PromptEcho) -> dict:
        """The prompt's part of a legacy logprobs object; answer offsets then count from the prompt's end."""
        offsets, at = [], 0
        for token in echo.tokens:
            offsets.append(at)
            at += len(token)
        self.offsets[echo.seq] = len(echo.text)
        values = echo.logprobs or (None,) * len(echo.tokens)
        tops = echo.top or (None,) * len(echo.tokens)
        return {"tokens": list(echo.tokens), "token_logprobs": list(values),
                "top_logprobs": [None if t is None else dict(t) for t in tops], "text_offset": offsets}  # fmt: skip

    def _logprobs(self, steps: Sequence[Step], seq: int) -> dict | None:
        if not self.logprobs:
            return None
        return {"content": [self._entry(s) for s in steps]} if self.chat else self._legacy(steps, seq)

    # ---- streaming -----------------------------------------------------------------------------

    def _chunk(self, choices: list[dict]) -> dict:
        out = {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
               "created": self.created, "model": self.model, "choices": choices}  # fmt: skip
        if self.include_usage:
            out["usage"] = None  # every chunk but the last, as OpenAI sends them
        return out

    def first_chunk(self, seq: int) -> dict | None:
        """Chat streams open each choice with the assistant role; completions have no such chunk."""
        if not self.chat:
            return None
        return self._chunk([{"index": seq, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                             "finish_reason": None}])  # fmt: skip

    def echo_chunk(self, echo: PromptEcho) -> dict:
        """A completion stream's first chunk of a choice with echo: its prompt (and the prompt's logprobs)."""
        lp = self._echo_legacy(echo) if self.logprobs else None
        return self._chunk([{"index": echo.seq, "text": echo.text, "logprobs": lp, "finish_reason": None}])

    def step_chunk(self, step: Step) -> dict:
        lp = self._logprobs([step], step.seq)
        if self.chat:
            choice = {"index": step.seq, "delta": {"content": step.text}, "logprobs": lp, "finish_reason": None}
        else:
            choice = {"index": step.seq, "text": step.text, "logprobs": lp, "finish_reason": None}
        return self._chunk([choice])

    def finish_chunk(self, done: Done) -> dict:
        if self.chat:
            choice = {"index": done.seq, "delta": {}, "logprobs": None, "finish_reason": done.finish_reason}
        else:
            choice = {"index": done.seq, "text": "", "logprobs": None, "finish_reason": done.finish_reason}
        return self._chunk([choice])

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict:
        out = self._chunk([])
        out["usage"] = usage(prompt_tokens, completion_tokens)
        return out

    # ---- whole responses -----------------------------------------------------------------------

    def response(self, steps: dict[int, list[Step]], dones: dict[int, Done],
                 echoes: Mapping[int, PromptEcho] | None = None) -> dict:  # fmt: skip
        """The non-streamed body: one choice per sequence, in index order (a completion's echoed prompt first)."""
        choices = []
        for seq in sorted(dones):
            done, echo = dones[seq], (echoes or {}).get(seq)
            head = self._echo_legacy(echo) if echo is not None and self.logprobs else None
            lp = self._logprobs(steps.get(seq, []), seq)
            if head is not None and lp is not None:
                lp = {key: head[key] + lp[key] for key in head}
            if self.chat:
                choices.append({"index": seq, "message": {"role": "assistant", "content": done.text},
                                "logprobs": lp, "finish_reason": done.finish_reason})  # fmt: skip
            else:
                text = done.text if echo is None else echo.text + done.text
                choices.append({"index": seq, "text": text, "logprobs": lp, "finish_reason": done.finish_reason})
        prompt = self.prompt_tokens if self.prompt_tokens is not None else (
            next(iter(dones.values())).prompt_tokens if dones else 0)
        return {"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": choices,
                "usage": usage(prompt, sum(d.completion_tokens for d in dones.values()))}  # fmt: skip
