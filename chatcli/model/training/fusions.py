"""What follows a packed group's matmul while LoRA trains, with the gradient left in one tensor.

A packed group's output is one [..., O] tensor (q/k/v side by side, or gate/up). Split into its
members by autograd's ``split``, its gradient is rebuilt in backward by a ``cat`` of the members'
gradients: a copy of every activation gradient of the group. RoPE built from autograd's ``cat``,
multiplies and add costs another cat in forward and, in backward, slice gradients that start from
zero-filled tensors and are summed. The two functions here take the whole group output and write
their gradient straight into one tensor of its shape, which :class:`~.lora_group.LoRAGroupFn`
reads as it is:

* :func:`qkv_rope`: q/k/v from the q/k/v group's output, q and k rotated (the same operations,
  in the same order, as :func:`~chatcli.model.rope.rotate`, so the same values), v a view. Backward:
  ``g·cos`` plus each half's partner times its sine, one multiply and two multiply-adds a head.
* :func:`swiglu`: ``silu(gate)·up`` from the gate/up group's output. Backward: the up half
  ``g·silu(gate)`` and the gate half through ATen's ``silu_backward``, each written into its half.
* :func:`rms_norm`: the model's RMSNorm with a backward of five passes over x where autograd's
  decomposition of ``F.rms_norm`` takes about ten (on CPU ATen has no fused backward).

The model takes these only while gradients flow (training) through a group whose LoRA terms
train; inference keeps its own path. ``tests/model/test_training_fusions.py`` checks values and
gradients against the autograd formulas.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class QKVRope(torch.autograd.Function):
    """``apply(y [B, S, O], cos, sin_signed [B, S, 1, Dh], heads, kv_heads)`` -> q [B, S, H, Dh],
    k [B, S, KV, Dh] (rotated, new tensors), v [B, S, KV, Dh] (a view of y)."""

    @staticmethod
    def forward(ctx, y, cos, sin, heads: int, kv_heads: int):
        B, S, _ = y.shape
        dh = cos.shape[-1]
        oq, ok = heads * dh, kv_heads * dh
        q = _rotated(y[..., :oq].view(B, S, heads, dh), cos, sin)
        k = _rotated(y[..., oq : oq + ok].view(B, S, kv_heads, dh), cos, sin)
        v = y[..., oq + ok :].view(B, S, kv_heads, dh)
        ctx.save_for_backward(cos, sin)
        ctx.sizes = (oq, ok)
        return q, k, v

    @staticmethod
    def backward(ctx, gq, gk, gv):
        cos, sin = ctx.saved_tensors
        oq, ok = ctx.sizes
        B, S, heads, dh = gq.shape
        out = gq.new_empty(B, S, oq + 2 * ok)  # the gradient of y, filled block by block
        _rotated_back(gq, cos, sin, out[..., :oq].view(B, S, heads, dh))
        _rotated_back(gk, cos, sin, out[..., oq : oq + ok].view(B, S, -1, dh))
        out[..., oq + ok :].view(B, S, -1, dh).copy_(gv)
        return out, None, None, None, None


def _rotated(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # rope.rotate's x·cos + swap_halves(x)·sin, rounded as it rounds (a product, then the sum),
    # without materialising the swapped copy by cat: each half's product is written in place.
    half = x.shape[-1] // 2
    out = x * cos
    swapped = torch.empty_like(out)
    torch.mul(x[..., half:], sin[..., :half], out=swapped[..., :half])
    torch.mul(x[..., :half], sin[..., half:], out=swapped[..., half:])
    return out.add_(swapped)


def _rotated_back(g: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out: torch.Tensor) -> None:
    # d/dx of x·cos + swap(x)·sin: g·cos, plus swap(g·sin) (the first half's partner is the second).
    half = g.shape[-1] // 2
    torch.mul(g, cos, out=out)
    out[..., :half].addcmul_(g[..., half:], sin[..., half:])
    out[..., half:].addcmul_(g[..., :half], sin[..., :half])


def qkv_rope(y: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int, kv_heads: int):
    """(q, k, v) [B, S, N, Dh] from the q/k/v group's output y [B, S, O]: see :class:`QKVRope`."""
    return QKVRope.apply(y, cos, sin, heads, kv_heads)


class SwiGLU(torch.autograd.Function):
    """``apply(y [..., 2F])`` -> silu(y[..., :F]) · y[..., F:] [..., F]."""

    @staticmethod
    def forward(ctx, y):
        f = y.shape[-1] // 2
        gate, up = y[..., :f], y[..., f:]
        s = F.silu(gate)
        ctx.save_for_backward(y, s)
        return s * up

    @staticmethod
    def backward(ctx, g):
        y, s = ctx.saved_tensors
        f = y.shape[-1] // 2
        out = torch.empty_like(y)
        torch.mul(g, s, out=out[..., f:])
        torch.ops.aten.silu_backward.grad_input(g * y[..., f:], y[..., :f], grad_input=out[..., :f])
        return out


def swiglu(y: torch.Tensor) -> torch.Tensor:
    """silu(gate)·up from the gate/up group's output y [..., 2F]: see :class:`SwiGLU`."""
    return SwiGLU.apply(y)


class RMSNormFn(torch.autograd.Function):
    """``apply(x [..., D], weight [D], eps)`` -> weight · rms_norm(x in float32).to(x.dtype), the
    values of :class:`~chatcli.model.model.RMSNorm`'s forward."""

    @staticmethod
    def forward(ctx, x, weight, eps: float):
        xf = x.float()
        h, rstd = _norm_and_rstd(xf, eps)
        hc = h.to(x.dtype)
        ctx.save_for_backward(x, weight, rstd, hc if weight.requires_grad else None)
        return weight * hc

    @staticmethod
    def backward(ctx, g):
        x, weight, rstd, hc = ctx.saved_tensors
        gh = (g * weight).float()  # d loss / d h, in float32 like the normalisation
        xf = x.float()
        # h = x·rstd, rstd = (mean(x²) + eps)^-1/2:  dx = rstd·gh - x·rstd³·mean(gh·x)
        coef = (gh * xf).sum(-1, keepdim=True).mul_(rstd.pow(3).div_(x.shape[-1]))
        gx = (gh * rstd).addcmul_(xf, coef, value=-1.0).to(x.dtype) if ctx.needs_input_grad[0] else None
        gw = (g * hc).reshape(-1, g.shape[-1]).sum(0) if ctx.needs_input_grad[1] else None
        return gx, gw, None


# ATen's fused kernel (what F.rms_norm runs on CPU) returns its rstd too; an older torch has none.
_FUSED_RMS_NORM = getattr(torch.ops.aten, "_fused_rms_norm", None)


def _norm_and_rstd(xf: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    if _FUSED_RMS_NORM is not None:
        try:
            return _FUSED_RMS_NORM(xf, [xf.shape[-1]], None, eps)
        except (NotImplementedError, RuntimeError):  # a device without the kernel: recompute rstd
            pass
    return F.rms_norm(xf, (xf.shape[-1],), eps=eps), torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """weight · rms_norm(x) with a lean backward: see :class:`RMSNormFn`."""
    return RMSNormFn.apply(x, weight, eps)
