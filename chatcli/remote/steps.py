"""OpenAI ``logprobs`` -> :class:`~chatcli.engine.events.Step` events.

One streamed chunk carries a piece of text (``delta.content`` for chat, ``text``
for completions) and, when asked for, the log-probabilities of the tokens it
holds: chat's ``logprobs.content = [{token, logprob, bytes, top_logprobs: [...]}]``
or the legacy completions' ``logprobs = {tokens, token_logprobs, top_logprobs}``.
Each token becomes one Step:

* ``logprobs_mode="raw"`` (vLLM's default, chatcli serve): ``logprob`` is the raw model's,
  so it fills ``model_prob`` (of the token and of each alternative); ``prob`` stays unknown.
* ``logprobs_mode="processed"`` (a server set to report post-sampling logprobs, e.g.
  vLLM ``--logprobs-mode processed_logprobs``): it fills ``prob``; ``model_prob`` stays unknown.
  llama.cpp's ``post_sampling_probs`` answers (``prob``/``top_probs``) are read the same way.
* ``entropy`` is ``-Σ p·log2 p`` over the alternatives returned (a lower bound of the
  full distribution's), and the step is ``partial``.
* ids: the server's ``id`` where it sends one (llama.cpp), else :func:`text_token_id`.

A chunk with text and no logprobs (a server that gives none) becomes one Step with
that text, unknown probabilities and no alternatives. Step texts always add up to
the streamed text: when token texts and the chunk text disagree, the chunk's wins.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from chatcli.engine.events import UNKNOWN, Step, TopToken, text_token_id

LogprobsMode = Literal["raw", "processed"]


class StepMapper:
    """Turns the chunks of one answer into Steps, numbering them from ``start``."""

    def __init__(self, mode: LogprobsMode = "raw", start: int = 0, seq: int = 0):
        self.mode = mode
        self.index = start
        self.seq = seq
        self.saw_logprobs = False  # did the server send any (for the panel's explanation)

    def chat_chunk(self, choice: dict) -> list[Step]:
        """Steps of one ``choices[i]`` of a chat completion chunk."""
        delta = choice.get("delta") or {}
        text = delta.get("content") or ""
        lp = choice.get("logprobs")
        entries = (lp.get("content") if isinstance(lp, dict) else None) or []
        return self._steps(text, [_entry(e) for e in entries if isinstance(e, dict)])

    def completion_chunk(self, choice: dict) -> list[Step]:
        """Steps of one ``choices[i]`` of a (legacy) completion chunk."""
        text = choice.get("text") or ""
        lp = choice.get("logprobs") or {}
        tokens = lp.get("tokens") or []
        values = lp.get("token_logprobs") or []
        tops = lp.get("top_logprobs") or []
        entries = []
        for i, tok in enumerate(tokens):
            top = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
            entries.append((None, tok, _f(values[i] if i < len(values) else None),
                            [(None, t, _f(v)) for t, v in sorted(top.items(), key=lambda kv: -(kv[1] or -math.inf))]))
        return self._steps(text, entries)

    # --- internals -------------------------------------------------------------------------

    def _steps(self, text: str, entries: list[tuple]) -> list[Step]:
        if not entries:
            if not text:
                return []
            return [self._step(text, text, None, UNKNOWN, (), partial=False)]
        self.saw_logprobs = True
        steps: list[Step] = []
        rest = text
        for k, (tid, token, logp, top) in enumerate(entries):
            if k == len(entries) - 1:
                piece, rest = rest, ""
            elif rest.startswith(token):
                piece, rest = token, rest[len(token):]
            else:
                piece = ""
            steps.append(self._step(token, piece, tid, logp, top, partial=True))
        return steps

    def _step(self, token: str, text: str, tid: int | None, logp: float, top, *, partial: bool) -> Step:
        p = math.exp(logp) if not math.isnan(logp) else UNKNOWN
        alts = tuple(
            TopToken(text_token_id(t) if i is None else i, t, *self._probs(math.exp(v) if not math.isnan(v) else UNKNOWN))
            for i, t, v in top
        )
        probs = [math.exp(v) for _, _, v in top if not math.isnan(v)]
        entropy = -sum(q * math.log2(q) for q in probs if q > 0) if probs else UNKNOWN
        prob, model_prob = self._probs(p)
        step = Step(
            index=self.index, id=text_token_id(token) if tid is None else tid, token=token, text=text,
            prob=prob, model_prob=model_prob, entropy=entropy, top=alts, seq=self.seq, partial=partial,
        )
        self.index += 1
        return step

    def _probs(self, p: float) -> tuple[float, float]:
        """(prob, model_prob) of a probability the server reported in this mode."""
        return (p, UNKNOWN) if self.mode == "processed" else (UNKNOWN, p)


def _f(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else UNKNOWN


def _entry(e: dict) -> tuple[int | None, str, float, list[tuple[int | None, str, float]]]:
    """(id, token, logprob, [(id, token, logprob)...]) of one chat logprobs entry.

    llama.cpp's post-sampling form gives ``prob``/``top_probs`` instead of logprobs.
    """
    def lp(d: dict) -> float:
        if "logprob" in d:
            return _f(d.get("logprob"))
        p = _f(d.get("prob"))
        return math.log(p) if p > 0 else (-math.inf if p == 0 else UNKNOWN)

    def tid(d: dict) -> int | None:
        i = d.get("id")
        return i if isinstance(i, int) and not isinstance(i, bool) and i >= 0 else None

    top_list = e.get("top_logprobs") if "top_logprobs" in e else e.get("top_probs")
    top = [(tid(t), str(t.get("token", "")), lp(t)) for t in (top_list or []) if isinstance(t, dict)]
    top.sort(key=lambda x: -(x[2] if not math.isnan(x[2]) else -math.inf))
    return tid(e), str(e.get("token", "")), lp(e), top
