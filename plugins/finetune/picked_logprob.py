"""log p(target) from logits, with a backward that writes the gradient over the softmax it kept.

``-F.cross_entropy(logits, targets, reduction="none")`` gives the same values through two autograd
nodes whose backward allocate two [N, V] tensors (nll's zero-filled gradient and log-softmax's
result) and pass over [N, V] three times. At a 49k vocabulary those are 50 MB each for 256
trained positions. :class:`PickedLogProb` keeps the log-softmax it computed (its own tensor,
never seen outside) and turns it into the gradient in place, ``-g·softmax`` plus ``g`` at each
target: two passes and no new [N, V] memory. Its backward may run once (as every loss here is
used); a second backward raises instead of reading the overwritten softmax.
"""

from __future__ import annotations

import torch


class PickedLogProb(torch.autograd.Function):
    """``apply(logits [N, V] float, targets [N] int64)`` -> log_softmax(logits)[n, targets[n]], [N]."""

    @staticmethod
    def forward(ctx, logits, targets):
        logp = torch.log_softmax(logits, dim=-1)  # [N, V], ours alone: backward overwrites it
        ctx.save_for_backward(logp, targets)
        ctx.spent = False
        return logp.gather(-1, targets[:, None]).squeeze(-1)

    @staticmethod
    def backward(ctx, g):
        if ctx.spent:
            raise RuntimeError("PickedLogProb's backward ran twice: its saved softmax is already the gradient")
        ctx.spent = True
        logp, targets = ctx.saved_tensors
        grad = logp.exp_().mul_(-g[:, None])  # d/dlogits of log p_t = onehot(t) - softmax
        grad.scatter_add_(-1, targets[:, None], g[:, None].to(grad.dtype))
        return grad, None


def picked_logprob(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(targets) [N] from logits [N, V] (float32): see :class:`PickedLogProb`."""
    return PickedLogProb.apply(logits, targets)
