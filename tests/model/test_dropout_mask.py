"""The sparse dropout mask has F.dropout's distribution: independent entries, each dropped with
probability p, whichever of the drops or the keeps it draws and however many refills it needs."""

import math

import pytest
import torch

from chatcli.model.training.dropout_mask import dropped, rare_positions


def _within(observed: float, expected: float, trials: int, sds: float = 5.0) -> bool:
    return abs(observed - expected) <= sds * math.sqrt(expected * (1 - expected) / trials) + 1e-12


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.7, 0.95])
def test_each_entry_is_dropped_with_probability_p(p):
    torch.manual_seed(1)
    m = dropped(torch.ones(4, 64, 96), p)  # each entry 0 (dropped) or 1: both sides of p = 1/2
    assert m.shape == (4, 64, 96) and m.dtype == torch.float32
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert _within(float((m == 0).float().mean()), p, m.numel())


@pytest.mark.parametrize("p", [0.05, 0.7])
def test_entries_are_independent_and_positions_alike(p):
    """Neighbours are both dropped at rate p² (no clustering from the gaps), and no position is
    favoured: over many masks each one's drop count stays within 5 sd of its binomial mean."""
    torch.manual_seed(2)
    masks = torch.stack([dropped(torch.ones(97), p) for _ in range(4000)])
    zero = masks == 0
    both = (zero[:, 1:] & zero[:, :-1]).float().mean()
    assert _within(float(both), p * p, zero[:, 1:].numel())
    per_position = zero.float().mean(0)
    sd = math.sqrt(p * (1 - p) / masks.shape[0])
    assert float((per_position - p).abs().max()) < 5 * sd


def test_gaps_between_drops_are_geometric():
    torch.manual_seed(3)
    q = 0.2
    pos = rare_positions(400_000, q)
    gaps = torch.diff(pos)
    for k in range(1, 6):
        assert _within(float((gaps == k).float().mean()), (1 - q) ** (k - 1) * q, gaps.numel())


def test_a_short_first_batch_refills_with_the_same_distribution():
    torch.manual_seed(4)
    n, q = 50_000, 0.05
    pos = rare_positions(n, q, spare_sd=-6.0)  # the first batch cannot reach the end
    assert pos.dtype == torch.int64 and pos.numel() > 0
    assert bool((pos[1:] > pos[:-1]).all()) and int(pos[0]) >= 0 and int(pos[-1]) < n
    assert _within(pos.numel() / n, q, n)
    assert int(pos[-1]) > n * 0.99  # the refills carry the drops on to the end


def test_reproducible_under_the_global_seed_and_empty_shapes():
    torch.manual_seed(5)
    a = dropped(torch.ones(3, 7, dtype=torch.bfloat16), 0.3)
    torch.manual_seed(5)
    b = dropped(torch.ones(3, 7, dtype=torch.bfloat16), 0.3)
    assert torch.equal(a, b) and a.dtype == torch.bfloat16
    assert dropped(torch.ones(0, 5), 0.1).shape == (0, 5) and dropped(torch.ones(0, 5), 0.9).shape == (0, 5)


@pytest.mark.parametrize("p", [0.0, 1.0, -0.1, float("nan")])
def test_rejects_a_probability_outside_zero_to_one(p):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        dropped(torch.ones(2), p)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.8])
def test_dropped_zeroes_a_p_share_and_its_gradient_follows(p):
    """dropped(x, p) is x with a p share of entries zeroed (the rest untouched), and the gradient
    reaching x is zero exactly where the entry was dropped (as x * mask's)."""
    torch.manual_seed(6)
    x = (torch.rand(3, 50, 80) + 1.0).requires_grad_(True)  # no entry is 0 by itself
    y = dropped(x, p)
    zero = y == 0
    assert _within(float(zero.float().mean()), p, zero.numel())
    assert torch.equal(y[~zero], x.detach()[~zero])
    g = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, x, g)
    assert torch.equal(grad, torch.where(zero, torch.zeros_like(g), g))


def test_dropped_copies_a_non_contiguous_input_and_leaves_it_alone():
    torch.manual_seed(7)
    base = torch.rand(40, 60) + 1.0
    x = base.t()  # a transposed view
    y = dropped(x, 0.2)
    assert y.shape == x.shape and bool((base > 0).all()) and bool((y == 0).any())
    assert torch.equal(y[y != 0], x[y != 0])
