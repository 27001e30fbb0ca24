"""The training fusions (chatcli.model.training.fusions) against the autograd formulas they replace."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from chatcli.model.rope import rotate
from chatcli.model.training.fusions import qkv_rope, swiglu


def _tables(B, S, dh, dtype):
    angles = torch.rand(B, S, 1, dh // 2, dtype=torch.float64) * 6
    sin = angles.sin()
    return torch.cat((angles, angles), -1).cos().to(dtype), torch.cat((-sin, sin), -1).to(dtype)


def test_qkv_rope_forward_is_rotate_bit_for_bit():
    torch.manual_seed(0)
    B, S, H, KV, dh = 2, 5, 4, 2, 8
    y = torch.randn(B, S, (H + 2 * KV) * dh)
    cos, sin = _tables(B, S, dh, torch.float32)
    q, k, v = qkv_rope(y, cos, sin, H, KV)
    qr, kr, vr = y.split([H * dh, KV * dh, KV * dh], -1)
    assert torch.equal(q, rotate(qr.view(B, S, H, dh), cos, sin))
    assert torch.equal(k, rotate(kr.view(B, S, KV, dh), cos, sin))
    assert torch.equal(v, vr.view(B, S, KV, dh))


def test_qkv_rope_gradients():
    torch.manual_seed(1)
    B, S, H, KV, dh = 2, 3, 2, 1, 4
    y = torch.randn(B, S, (H + 2 * KV) * dh, dtype=torch.float64, requires_grad=True)
    cos, sin = _tables(B, S, dh, torch.float64)

    def f(y):
        q, k, v = qkv_rope(y, cos, sin, H, KV)
        return q * 1.5, k - 2, v * v  # every output reaches the loss differently

    assert torch.autograd.gradcheck(f, (y,))
    w = [torch.randn(B, S, n, dh, dtype=torch.float64) for n in (H, KV, KV)]
    ours = torch.autograd.grad(sum((o * wi).sum() for o, wi in zip(qkv_rope(y, cos, sin, H, KV), w)), y)[0]
    qr, kr, vr = y.split([H * dh, KV * dh, KV * dh], -1)
    ref_out = (rotate(qr.view(B, S, H, dh), cos, sin), rotate(kr.view(B, S, KV, dh), cos, sin), vr.view(B, S, KV, dh))
    ref = torch.autograd.grad(sum((o * wi).sum() for o, wi in zip(ref_out, w)), y)[0]
    assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-12)
    assert ours.is_contiguous()  # one tensor, as the group's matmul backward reads it


def test_swiglu_matches_the_formula_and_its_gradient():
    torch.manual_seed(2)
    y = torch.randn(3, 4, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(swiglu, (y,))
    x = torch.randn(3, 4, 10)
    assert torch.equal(swiglu(x), F.silu(x[..., :5]) * x[..., 5:])
    g = torch.randn(3, 4, 5, dtype=torch.float64)
    ours = torch.autograd.grad((swiglu(y) * g).sum(), y)[0]
    ref = torch.autograd.grad((F.silu(y[..., :5]) * y[..., 5:] * g).sum(), y)[0]
    assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-12)


def test_rms_norm_matches_the_model_formula_and_its_gradients():
    # (No gradcheck: the norm computes in float32 whatever the input dtype, as the model's does.)
    from chatcli.model.training.fusions import rms_norm

    torch.manual_seed(3)
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
        x = torch.randn(2, 3, 6).to(dtype).requires_grad_(True)
        w = torch.randn(6).to(dtype).requires_grad_(True)
        ours = rms_norm(x, w, 1e-5)
        x2, w2 = x.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
        ref = w2 * F.rms_norm(x2.float(), (6,), eps=1e-5).to(dtype)
        assert torch.equal(ours, ref)
        g = torch.randn(2, 3, 6).to(dtype)
        got, want = torch.autograd.grad(ours, (x, w), g), torch.autograd.grad(ref, (x2, w2), g)
        for a, b in zip(got, want):
            assert a.dtype == dtype and torch.allclose(a.float(), b.float(), rtol=tol, atol=tol * b.abs().max().item())
    frozen = torch.randn(6)
    x = torch.randn(4, 6, requires_grad=True)
    assert torch.autograd.grad(rms_norm(x, frozen, 1e-6).sum(), x)[0].shape == (4, 6)
