"""Sampling functions agree with transformers' logits processors and are reproducible."""

from __future__ import annotations

import math

import pytest
import torch

from chatcli.engine.params import SamplingParams
from chatcli.engine.sampling import (
    apply_repetition_penalty,
    entropy_bits,
    make_generator,
    processed_logits,
    raw_distribution,
    sample,
    sampling_distribution,
    top_tokens,
)
from chatcli.errors import GenerationError

lp = pytest.importorskip("transformers.generation.logits_process")


def _logits(b=4, v=64, seed=0, scale=3.0) -> torch.Tensor:
    return torch.randn(b, v, generator=torch.Generator().manual_seed(seed)) * scale


def _hf_chain(params: SamplingParams, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """transformers' processors in the order generate() builds them."""
    procs = []
    if params.repetition_penalty != 1.0:
        procs.append(lp.RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if params.temperature != 1.0:
        procs.append(lp.TemperatureLogitsWarper(params.temperature))
    if params.top_k:
        procs.append(lp.TopKLogitsWarper(params.top_k))
    if params.top_p < 1.0:
        procs.append(lp.TopPLogitsWarper(params.top_p))
    if params.min_p > 0:
        procs.append(lp.MinPLogitsWarper(params.min_p))
    for p in procs:
        scores = p(input_ids, scores)
    return scores


CASES = [
    dict(temperature=1.0),
    dict(temperature=0.7),
    dict(temperature=1.5, top_k=5),
    dict(temperature=1.0, top_k=1),
    dict(temperature=0.8, top_p=0.9),
    dict(temperature=1.0, top_p=0.3),
    dict(temperature=1.0, min_p=0.1),
    dict(temperature=0.6, top_k=20, top_p=0.95, min_p=0.05),
    dict(temperature=1.2, top_k=10, top_p=0.8, repetition_penalty=1.3),
    dict(temperature=1.0, repetition_penalty=0.8),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_matches_transformers_processors(case):
    params = SamplingParams(**case)
    for seed in range(3):
        logits = _logits(seed=seed)
        prev = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(seed + 100))
        expected = _hf_chain(params, prev, logits.clone())
        got = processed_logits(logits, params, prev)
        assert torch.equal(torch.isinf(got), torch.isinf(expected))
        finite = torch.isfinite(expected)
        torch.testing.assert_close(got[finite], expected[finite])
        torch.testing.assert_close(sampling_distribution(logits, params, prev), torch.softmax(expected, dim=-1))


def test_repetition_penalty_matches_transformers_and_hf_convention():
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0, 0.5]])
    prev = torch.tensor([[0, 1, 1]])
    got = apply_repetition_penalty(logits, prev, 2.0)
    assert got.tolist() == [[1.0, -4.0, 1.0, -1.0, 0.5]]  # positive divided, negative multiplied, once each
    expected = lp.RepetitionPenaltyLogitsProcessor(2.0)(prev, logits.clone())
    assert torch.equal(got, expected)
    # 1-D logits with a plain list of ids
    assert apply_repetition_penalty(logits[0], [0, 1], 2.0).tolist() == got[0].tolist()


def test_greedy_is_one_hot_on_the_argmax_after_penalty():
    logits = torch.tensor([3.0, 2.9, -1.0])
    greedy = SamplingParams(temperature=0)
    assert sampling_distribution(logits, greedy).tolist() == [1.0, 0.0, 0.0]
    penalised = SamplingParams(temperature=0, repetition_penalty=1.5)
    assert sampling_distribution(logits, penalised, [0]).tolist() == [0.0, 1.0, 0.0]
    assert int(sample(sampling_distribution(logits, greedy), make_generator(1))) == 0


def test_same_seed_same_tokens_and_draws_follow_the_distribution():
    logits = _logits(b=1, v=10, seed=3, scale=1.0)[0]
    probs = sampling_distribution(logits, SamplingParams(temperature=1.0))
    a = [int(sample(probs, make_generator(42))) for _ in range(3)]
    assert len(set(a)) == 1  # a fresh generator with the same seed draws the same token
    g1, g2 = make_generator(7), make_generator(7)
    seq1 = [int(sample(probs, g1)) for _ in range(50)]
    seq2 = [int(sample(probs, g2)) for _ in range(50)]
    assert seq1 == seq2
    g3 = make_generator(8)
    assert [int(sample(probs, g3)) for _ in range(50)] != seq1
    # Empirical frequencies over many draws approach the distribution sampled from.
    g = make_generator(0)
    draws = sample(probs.expand(20000, -1), g)
    freq = torch.bincount(draws, minlength=10).float() / 20000
    assert (freq - probs).abs().max() < 0.02


def test_filtered_tokens_are_never_drawn():
    logits = _logits(b=1, v=50, seed=5)[0]
    params = SamplingParams(temperature=2.0, top_k=3)
    probs = sampling_distribution(logits, params)
    allowed = set(torch.topk(logits, 3).indices.tolist())
    assert set(torch.nonzero(probs).flatten().tolist()) == allowed
    draws = sample(probs.expand(2000, -1), make_generator(0))
    assert set(draws.tolist()) <= allowed


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_invalid_logits_raise_a_generation_error(bad):
    logits = torch.zeros(2, 8)
    logits[1, 3] = bad
    with pytest.raises(GenerationError, match="invalid logits") as e:
        sampling_distribution(logits, SamplingParams())
    assert "\n" not in e.value.message


def test_entropy_and_raw_distribution():
    assert math.isclose(float(entropy_bits(torch.full((8,), 1 / 8))), 3.0, rel_tol=1e-6)
    assert float(entropy_bits(torch.tensor([1.0, 0.0, 0.0]))) == 0.0
    logits = _logits(b=2, v=16, seed=9)
    raw = raw_distribution(logits)
    torch.testing.assert_close(raw.sum(-1), torch.ones(2))
    expected = -(raw * raw.log2()).sum(-1)
    torch.testing.assert_close(entropy_bits(raw), expected)


def test_top_tokens_report_raw_and_used_probabilities():
    logits = torch.tensor([0.0, 3.0, 1.0, 2.0])
    raw = raw_distribution(logits)
    used = sampling_distribution(logits, SamplingParams(temperature=1.0, top_k=2))
    top = top_tokens(raw, used, 3)
    assert [t[0] for t in top] == [1, 3, 2]
    assert top[2][1] == 0.0 and top[2][2] > 0  # filtered from sampling, still shown with its model prob
    assert math.isclose(sum(t[1] for t in top), 1.0, rel_tol=1e-6)


def test_sample_never_draws_zero_probability_ids_at_the_edges():
    probs = torch.tensor([0.0, 0.5, 0.0, 0.5, 0.0])
    draws = sample(probs.expand(5000, -1), make_generator(1))
    assert set(draws.tolist()) == {1, 3}
    assert int(sample(torch.tensor([1.0, 0.0, 0.0]), make_generator(2))) == 0
    assert int(sample(torch.tensor([0.0, 0.0, 1.0]), make_generator(3))) == 2


@pytest.mark.parametrize("top_p", [0.3, 0.9, 0.999])
def test_top_p_on_a_large_vocabulary_matches_transformers(top_p):
    """Large vocabularies take the top-k shortcut; it keeps exactly the tokens transformers keeps."""
    for seed in range(2):
        for scale in (1.0, 4.0):
            logits = _logits(b=2, v=49152, seed=seed, scale=scale)
            params = SamplingParams(temperature=1.0, top_p=top_p)
            expected = lp.TopPLogitsWarper(top_p)(None, logits.clone())
            got = processed_logits(logits, params)
            assert torch.equal(torch.isinf(got), torch.isinf(expected))
