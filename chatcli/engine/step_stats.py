"""One decoding step's numbers: from a batch of logits to the sampled ids and what the UI shows.

:func:`sample_rows` takes logits ``[B, V]`` and, for each requested row, draws the next
id from the sampling distribution (greedy: its argmax) and reports the chosen id's
probability in that distribution (``prob``) and in the raw model distribution
(``model_prob``, softmax at T=1), the raw distribution's entropy in bits, and its most
probable tokens. A row whose logits hold NaN or Inf yields the error message instead,
so one broken row of a batch does not stop the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from chatcli.engine.events import TopToken
from chatcli.engine.params import SamplingParams
from chatcli.engine.sampling import check_finite, largest, raw_with_entropy, sample, sampling_distribution
from chatcli.errors import GenerationError


@dataclass(frozen=True)
class Sampled:
    """One row's outcome for one step."""

    id: int
    prob: float  # in the distribution sampled from
    model_prob: float  # in the raw model distribution
    entropy: float  # bits, raw distribution
    top: tuple[TopToken, ...]


@torch.inference_mode()
def sample_rows(
    logits: torch.Tensor,
    params: SamplingParams,
    history: torch.Tensor | None,
    generators: Sequence[torch.Generator],
    rows: Sequence[int],
    token_text: Callable[[int], str],
) -> dict[int, Sampled | str]:
    """Sample rows ``rows`` of logits [B, V] (``history`` [B, S]: ids seen, for the repetition
    penalty; ``generators[r]`` draws for row r). Returns row -> Sampled, or -> error message.

    Few passes over the vocabulary (each costs about as much as a small layer): one
    log-softmax gives the raw distribution and its entropy, and the entropy also serves as
    the finiteness check (it is NaN or infinite exactly when a logit is: a -inf logit gives
    0 * -inf); the shown top tokens come from :func:`~chatcli.engine.sampling.largest`, and a
    greedy step without a repetition penalty takes its argmax from them when the first two
    differ (the raw probabilities order the logits, so the most probable is the argmax). The
    numbers are those of the plain computation, bit for bit."""
    out: dict[int, Sampled | str] = {}
    rows = list(rows)
    x = logits if rows == list(range(logits.shape[0])) else logits[rows]  # [G, V]
    raw, ent = raw_with_entropy(x)  # [G, V], [G]
    entropies = ent.tolist()
    good = []
    for j, r in enumerate(rows):
        if not math.isfinite(entropies[j]):
            try:
                check_finite(x[j])
            except GenerationError as e:
                out[r] = e.message
                continue
        good.append(j)
    if not good:
        return out
    if len(good) < len(rows):
        x, raw, entropies = x[good], raw[good], [entropies[j] for j in good]
    hist = history[[rows[j] for j in good]] if history is not None else None
    plain_greedy = params.greedy and (hist is None or params.repetition_penalty == 1.0)
    used = None if plain_greedy else sampling_distribution(x, params, hist, checked=True)  # [G, V]
    n = params.top_n
    for j, gj in enumerate(good):
        r = rows[gj]
        k = max(n, 2) if plain_greedy else n
        vals, idx = largest(raw[j], k) if k > 0 else (None, None)
        ids = idx.tolist() if idx is not None else []
        raw_top = vals.tolist() if vals is not None else []
        if plain_greedy:
            if len(ids) > 1 and raw_top[0] > raw_top[1]:
                tid = ids[0]
            else:  # a tie at the top: the argmax, and the top as topk(n) orders ties (it depends on k)
                tid = int(x[j].argmax())
                vals, idx = largest(raw[j], n) if n > 0 else (None, None)
                ids = idx.tolist() if idx is not None else []
                raw_top = vals.tolist() if vals is not None else []
            used_top = [1.0 if i == tid else 0.0 for i in ids]  # the one-hot the greedy step draws from
            prob = 1.0
        else:
            tid = int(used[j].argmax()) if params.greedy else int(sample(used[j], generators[r]))
            used_top = used[j][idx].tolist() if idx is not None else []
            prob = float(used[j, tid])
        top = tuple(TopToken(i, token_text(i), u, m) for i, u, m in list(zip(ids, used_top, raw_top))[:n])
        out[r] = Sampled(tid, prob, float(raw[j, tid]), entropies[j], top)
    return out
