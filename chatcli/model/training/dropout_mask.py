"""Dropout drawn from the few positions that change instead of one draw per entry: :func:`dropped`.

LoRA dropout zeroes each input entry of every adapted layer independently with probability p
(PEFT's ``nn.Dropout``). At the usual p = 0.05 that means one random number per entry, 95% of
which say "keep": on CPU torch's generator is serial, and those draws were 14% of an SFT step on
the default model (210 masks a step; 4.8 ms for one [2, 256, 1536] down-projection input).

The same distribution can be drawn from the rare outcome alone. In a row of independent
Bernoulli(q) trials the gaps between successes are independent Geometric(q) variables
(P(gap = k) = (1 - q)^(k-1)·q, k ≥ 1), and conversely: so :func:`rare_positions` draws about
n·q gaps, and their running sum gives the positions of the rare entries (q being the rarer of p and
1 - p); :func:`dropped` zeroes those positions in a copy of its input (or, at a high p, copies the
kept ones into zeros).

Each gap comes from one uniform 31-bit integer by the inverse CDF, ``floor(log(u) / log(1 - q))
+ 1`` with u = (r + ½)/2^31 in (0, 1): the CDF is exact to within 2^-31 at every k, the same
resolution as the 31-bit threshold this replaces, and the logarithms run vectorised, on all
threads. The draws use torch's global generator, so ``torch.manual_seed`` still makes training
reproducible (with a different stream from F.dropout's). Measured here (2 cores, p = 0.05): a
[2, 256, 576] mask in 0.29 ms against 0.95–1.16 ms for the dense draw and compare, [2, 256, 1536]
in 0.49 against 5.0 ms (benchmarks/PERFLOG.md, issue 18 round 6).

On other devices the dense draw stays: their generators are parallel, and the sparse draw needs
one host read of the last position.
"""

from __future__ import annotations

import math

import torch

# Gaps drawn up front, in standard deviations of the number needed beyond its mean: the first
# batch almost always suffices (8 sd: about 1e-15), and a short one simply draws another.
_SPARE_SD = 8.0


def dropped(x: torch.Tensor, p: float) -> torch.Tensor:
    """x with each entry independently set to 0 with probability p (not rescaled: the caller folds
    1 / (1 - p) into a cheaper product); differentiable, 0 < p < 1 (the caller skips p = 0).

    On CPU the rarer outcome's positions are drawn (:func:`rare_positions`): at p <= 1/2 the dropped
    ones are zeroed in a copy of x (``index_fill``: no mask tensor, no multiply; its backward zeroes
    the same positions of the gradient; in an SFT step of the default model that read 278 tok/s
    against 254 with a float mask multiplied in), above it the kept ones are copied into zeros.
    Other devices draw one 31-bit integer per entry (their generators are parallel)."""
    return DropPattern(x.numel(), p, x.device).applied(x)


class DropPattern:
    """Which of n entries dropout zeroes, drawn once, so that the same entries can be zeroed in an
    input and later in its gradient (:mod:`chatcli.model.training.lora_group` does both by hand).

    On CPU it holds the rarer outcome's sorted positions: the dropped ones at p <= 1/2, else the
    kept ones; elsewhere a dense 0/1 mask."""

    def __init__(self, n: int, p: float, device: torch.device):
        if not 0.0 < p < 1.0:
            raise ValueError(f"dropout probability must lie strictly between 0 and 1, got {p}")
        self.mask: torch.Tensor | None = None  # [n] int32 0/1, off CPU
        self.positions: torch.Tensor | None = None  # sorted int64, on CPU
        self.of_dropped = p <= 0.5  # positions are the dropped entries (else the kept ones)
        if torch.device(device).type != "cpu":
            self.mask = (torch.empty(n, dtype=torch.int32, device=device).random_() >= round(p * 2**31)).int()
        else:
            self.positions = rare_positions(n, p if self.of_dropped else 1.0 - p)

    def applied(self, x: torch.Tensor) -> torch.Tensor:
        """x [any shape, n entries] with the dropped entries zeroed, out of place and differentiable."""
        flat = x.reshape(-1)
        if self.mask is not None:
            return (flat * self.mask.to(x.dtype)).view(x.shape)
        if self.of_dropped:
            return flat.index_fill(0, self.positions, 0.0).view(x.shape)
        return torch.zeros_like(flat).index_copy(0, self.positions, flat[self.positions]).view(x.shape)

    def zero_(self, x: torch.Tensor) -> torch.Tensor:
        """Zero the dropped entries of the contiguous x in place (no autograd); returns x."""
        flat = x.view(-1)
        if self.mask is not None:
            flat.mul_(self.mask.to(x.dtype))
        elif self.of_dropped:
            flat.index_fill_(0, self.positions, 0.0)
        else:
            kept = flat[self.positions]
            flat.zero_().index_copy_(0, self.positions, kept)
        return x


def rare_positions(n: int, q: float, spare_sd: float = _SPARE_SD) -> torch.Tensor:
    """Sorted int64 indices in [0, n) of the successes in n independent Bernoulli(q) trials.

    `spare_sd` only sets how many gaps are drawn per batch (tests shrink it to exercise the
    refill); it does not change the distribution, since gaps are memoryless."""
    mean = n * q
    batch = max(16, int(mean + spare_sd * math.sqrt(mean * (1.0 - q)) + 16))
    ends = _geometric_gaps(batch, q).cumsum_(0)  # 1-based positions of successes
    parts = [ends]
    while ends[-1].item() <= n:  # too few gaps drawn to pass the end: draw on from the last one
        ends = _geometric_gaps(batch, q).cumsum_(0).add_(ends[-1])
        parts.append(ends)
    ends = torch.cat(parts) if len(parts) > 1 else parts[0]
    inside = int(torch.searchsorted(ends, float(n), right=True))
    return ends[:inside].to(torch.int64).sub_(1)


def _geometric_gaps(k: int, q: float) -> torch.Tensor:
    """k independent Geometric(q) values (support 1, 2, ...) as float64, by the inverse CDF."""
    u = torch.empty(k, dtype=torch.int32).random_().to(torch.float64).add_(0.5).mul_(2.0**-31)
    return u.log_().mul_(1.0 / math.log1p(-q)).floor_().add_(1.0)
