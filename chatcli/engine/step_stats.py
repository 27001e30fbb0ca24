"""One decoding step's numbers: from a batch of logits to the sampled ids and what the UI shows.

:func:`sample_rows` takes logits ``[B, V]`` and, for each requested row, draws the next
id from the sampling distribution (greedy: its argmax) and reports the chosen id's
probability in that distribution (``prob``) and in the raw model distribution
(``model_prob``, softmax at T=1), the raw distribution's entropy in bits, and its most
probable tokens. A row whose logits hold NaN or Inf yields the error message instead,
so one broken row of a batch does not stop the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from chatcli.engine.events import TopToken
from chatcli.engine.params import SamplingParams
from chatcli.engine.sampling import check_finite, raw_with_entropy, sample, sampling_distribution, top_tokens
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
    penalty; ``generators[r]`` draws for row r). Returns row -> Sampled, or -> error message."""
    out: dict[int, Sampled | str] = {}
    for r in rows:
        try:
            check_finite(logits[r])
        except GenerationError as e:
            out[r] = e.message
    good = [r for r in rows if r not in out]
    if not good:
        return out
    x = logits[good]  # [G, V]
    raw, ent = raw_with_entropy(x)  # [G, V], [G]
    used = sampling_distribution(x, params, history[good] if history is not None else None)  # [G, V]
    for j, r in enumerate(good):
        tid = int(used[j].argmax()) if params.greedy else int(sample(used[j], generators[r]))
        top = tuple(TopToken(i, token_text(i), u, m) for i, u, m in top_tokens(raw[j], used[j], params.top_n))
        out[r] = Sampled(tid, float(used[j, tid]), float(raw[j, tid]), float(ent[j]), top)
    return out
