"""picked_logprob: -cross_entropy's values, and its gradient, with the softmax reused in place."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from chatcli_finetune.losses import picked_logprob


def test_values_and_gradient_match_cross_entropy():
    torch.manual_seed(0)
    logits = (torch.randn(7, 50) * 4).requires_grad_(True)
    targets = torch.randint(0, 50, (7,))
    targets[3] = targets[4]  # a repeated target id
    w = torch.randn(7)
    ours = picked_logprob(logits, targets)
    ref_in = logits.detach().clone().requires_grad_(True)
    ref = -F.cross_entropy(ref_in, targets, reduction="none")
    assert torch.equal(ours, ref)
    (g,) = torch.autograd.grad((ours * w).sum(), logits)
    (rg,) = torch.autograd.grad((ref * w).sum(), ref_in)
    assert torch.allclose(g, rg, rtol=1e-5, atol=1e-7)


def test_float64_gradient_is_the_formula():
    # (Not gradcheck: it runs backward several times over one graph, which this function refuses.)
    torch.manual_seed(1)
    logits = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 8, 3, 3])
    g = torch.randn(4, dtype=torch.float64)
    (ours,) = torch.autograd.grad(picked_logprob(logits, targets), logits, g)
    expected = g[:, None] * (F.one_hot(targets, 9).double() - logits.detach().softmax(-1))
    assert torch.allclose(ours, expected, rtol=1e-12, atol=1e-14)


def test_a_second_backward_is_refused_not_wrong():
    logits = torch.randn(2, 5, requires_grad=True)
    out = picked_logprob(logits, torch.tensor([1, 2])).sum()
    out.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        out.backward()
