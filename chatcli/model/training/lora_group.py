"""A packed group's frozen matmul and its members' trained LoRA terms as one autograd node.

While LoRA adapters train, each adapted linear layer adds ``s·B·A·dropout(x)`` to a frozen
``W·x``. Built from autograd's own operations, every member of a packed group (q/k/v, gate/up,
and the groups of one: o, down) costs about five graph nodes, and three of them copy a full
activation: ``addmm`` copies its [N, out] input into a new tensor, dropout's backward clones the
[N, in] gradient before zeroing it, and the gradients that reach x from the base product and
from each member are summed into new [N, in] tensors. :class:`LoRAGroupFn` computes the same
values by hand, in place where autograd may not:

forward   y = x·Wᵀ + b                        one matmul for the whole group, [N, O]
          y[:, member] += (s·(drop(x)·Aᵀ))·Bᵀ   ``addmm_`` into y's column block (no copy)
backward  gx = gy·W                           the group's matmul
          gh = s·(gy[:, member]·B)            [N, r]
          gB = gy[:, member]ᵀ·h,  gA = ghᵀ·drop(x)
          gx += drop(gh·A)                    zeroed in place in a fresh product, added in place

``drop`` zeroes the same entries in x and in the gradient (:class:`~.dropout_mask.DropPattern`,
drawn from torch's global generator, so ``torch.manual_seed`` and gradient checkpointing's replay
see the same masks). Each member keeps its own mask, as PEFT's per-layer ``nn.Dropout`` does. A
frozen adapter stacked under the trained one (its A and B need no gradient) is added the same way
and gets none. Float32 A/B on a bf16 base: the low-rank product runs in float32 and is rounded
once into y, as :func:`~chatcli.model.lora_linear._add_trained_side` does.

:func:`~chatcli.model.packed.fused_linear` takes this path while LoRA parameters need gradients and the base
weights do not; anything else runs as before. The values equal the autograd formula's up to float
rounding (``tests/model/test_training_lora_group.py`` checks them, and their gradients, against it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from chatcli.model.training.dropout_mask import DropPattern


@dataclass(frozen=True)
class Term:
    """One adapter on one member: its output columns [start, start + size), its scale s·c (times
    1 / (1 - p) while dropout is on) and its dropout probability (0: none)."""

    start: int
    size: int
    scale: float
    dropout: float


class LoRAGroupFn(torch.autograd.Function):
    """``apply(x [..., in], weight_t [in, O], bias [O] | None, terms, A_0, B_0, A_1, B_1, ...)`` ->
    y [..., O]: the group's output with every term's low-rank product added (see the module
    docstring). ``weight_t`` and ``bias`` are frozen; gradients reach x and the A/B that need them."""

    @staticmethod
    def forward(ctx, x, weight_t, bias, terms: Sequence[Term], *pairs):
        lead, d_in = x.shape[:-1], x.shape[-1]
        x2 = x.reshape(-1, d_in)
        y = torch.addmm(bias, x2, weight_t) if bias is not None else x2 @ weight_t  # [N, O]
        inputs, hs, patterns = [], [], []
        casts = {x2.dtype: x2}  # x in A's dtype (float32 masters on a bf16 base), shared by the terms without dropout
        for i, t in enumerate(terms):
            A, B = pairs[2 * i], pairs[2 * i + 1]
            pattern = None
            if t.dropout:  # its own copy, in A's dtype, with its own entries zeroed
                pattern = DropPattern(x2.numel(), t.dropout, x2.device)
                xa = pattern.zero_(x2.to(A.dtype, copy=True))
            else:
                xa = casts.get(A.dtype)
                if xa is None:
                    xa = casts[A.dtype] = x2.to(A.dtype)
            h = (xa @ A.t()).mul_(t.scale)  # [N, r]
            block = y[:, t.start : t.start + t.size]
            if B.dtype == y.dtype:
                block.addmm_(h, B.t())
            else:
                block.add_((h @ B.t()).to(y.dtype))
            inputs.append(xa)
            hs.append(h)
            patterns.append(pattern)
        ctx.terms, ctx.patterns, ctx.lead = tuple(terms), patterns, lead
        ctx.save_for_backward(weight_t, *pairs, *inputs, *hs)
        return y.view(*lead, y.shape[-1])

    @staticmethod
    def backward(ctx, gy):
        terms, k = ctx.terms, len(ctx.terms)
        saved = ctx.saved_tensors
        weight_t, pairs, inputs, hs = saved[0], saved[1 : 1 + 2 * k], saved[1 + 2 * k : 1 + 3 * k], saved[1 + 3 * k :]
        gy2 = gy.reshape(-1, gy.shape[-1])
        want_x = ctx.needs_input_grad[0]
        gx = gy2 @ weight_t.t() if want_x else None  # [N, in]
        grads: list[torch.Tensor | None] = []
        for i, t in enumerate(terms):
            A, B = pairs[2 * i], pairs[2 * i + 1]
            need_a, need_b = ctx.needs_input_grad[4 + 2 * i], ctx.needs_input_grad[5 + 2 * i]
            gys = gy2[:, t.start : t.start + t.size]
            if gys.dtype != B.dtype:
                gys = gys.to(B.dtype)
            g_b = gys.t() @ hs[i] if need_b else None  # [out, r]
            g_a = None
            if need_a or want_x:
                gh = (gys @ B).mul_(t.scale)  # [N, r]
                if need_a:
                    g_a = gh.t() @ inputs[i]  # [r, in]
                if want_x and ctx.patterns[i] is None and A.dtype == gx.dtype:
                    gx.addmm_(gh, A)
                elif want_x:
                    part = ctx.patterns[i].zero_(gh @ A) if ctx.patterns[i] is not None else gh @ A  # [N, in], fresh
                    gx.add_(part if part.dtype == gx.dtype else part.to(gx.dtype))
            grads += [g_a, g_b]
        if gx is not None:
            gx = gx.view(*ctx.lead, gx.shape[-1])
        return (gx, None, None, None, *grads)


def group_with_lora(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None,
                    members: Sequence[tuple[int, int, object]], training: bool) -> torch.Tensor:  # fmt: skip
    """y [..., O] for x [..., in]: the group's product plus the active adapters of each member.
    ``members``: (start, size, LoRALinear or None) per member, in column order."""
    terms, tensors = [], []
    for start, size, lora in members:
        if lora is None:
            continue
        for p in lora.lora.values():
            if not p.active:
                continue
            drop = p.dropout if training else 0.0
            scale = p.scale * p.scaling / (1.0 - drop)
            terms.append(Term(start, size, scale, drop))
            tensors += [p.A, p.B]
    return LoRAGroupFn.apply(x, weight_t, bias, tuple(terms), *tensors)
