"""largest() is torch.topk, faster; sample_rows' greedy shortcut keeps the plain computation's numbers."""

from __future__ import annotations

import pytest
import torch

from chatcli.engine.params import SamplingParams
from chatcli.engine.sampling import largest, make_generator, raw_with_entropy
from chatcli.engine.step_stats import sample_rows


@pytest.mark.parametrize("k", [1, 2, 5, 64])
def test_largest_is_topk(k):
    gen = torch.Generator().manual_seed(k)
    for sharp in (1.0, 8.0):
        x = torch.rand(49152, generator=gen) ** sharp
        assert all(torch.equal(a, b) for a, b in zip(largest(x, k), torch.topk(x, k)))
    ties = torch.zeros(49152)
    ties[[5, 900, 40000]] = 1.0  # a tie at the top: torch's own answer, whatever its order
    assert all(torch.equal(a, b) for a, b in zip(largest(ties, k), torch.topk(ties, k)))
    short = torch.rand(1000, generator=gen)  # not whole chunks: torch's topk
    assert all(torch.equal(a, b) for a, b in zip(largest(short, k), torch.topk(short, k)))


def _plain_greedy(logits: torch.Tensor, n: int):
    """What a greedy step reports, computed the long way (one-hot distribution, full topk)."""
    raw, ent = raw_with_entropy(logits)
    used = torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    tid = int(used.argmax())
    vals, idx = torch.topk(raw, n)
    top = [(int(i), float(used[i]), float(v)) for i, v in zip(idx, vals)]
    return tid, float(raw[tid]), float(ent), top


@pytest.mark.parametrize("n", [0, 1, 5])
def test_greedy_step_matches_the_long_way(n):
    gen = torch.Generator().manual_seed(n)
    for logits in (torch.randn(49152, generator=gen) * 4, torch.randn(300, generator=gen).round()):
        got = sample_rows(logits[None], SamplingParams(temperature=0, top_n=n), None, [make_generator(0)], [0],
                          str)[0]
        tid, model_prob, entropy, top = _plain_greedy(logits, n)
        assert (got.id, got.prob, got.model_prob, got.entropy) == (tid, 1.0, model_prob, entropy)
        assert [(t.id, t.prob, t.model_prob) for t in got.top] == top


def test_non_finite_rows_get_the_error_and_others_their_token():
    logits = torch.randn(3, 500)
    logits[0, 3] = float("nan")
    logits[2, 7] = float("-inf")
    got = sample_rows(logits, SamplingParams(temperature=0), None, [make_generator(0)] * 3, [0, 1, 2], str)
    assert "1 NaN" in got[0] and "1 infinite" in got[2]
    assert got[1].id == int(logits[1].argmax())
