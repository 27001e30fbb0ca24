"""Sampling: pure functions from logits to the distribution a token is drawn from.

Everything works on float32 logits shaped ``[V]`` or ``[B, V]`` and follows the
conventions of transformers' logits processors, applied in transformers' order:
repetition penalty, temperature, top-k, top-p, min-p. :func:`sampling_distribution`
returns the probabilities that :func:`sample` then draws from, so the UI can show
exactly what was used. Temperature 0 is greedy: a one-hot vector on the argmax
(after the repetition penalty). Randomness only comes from an explicit
``torch.Generator``: the same seed gives the same tokens.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from chatcli.engine.params import SamplingParams
from chatcli.errors import GenerationError

_NEG_INF = float("-inf")


def check_finite(logits: torch.Tensor) -> None:
    """Raise :class:`GenerationError` if the model produced NaN or infinite logits."""
    if not bool(torch.isfinite(logits).all()):
        nan = int(torch.isnan(logits).sum())
        inf = int(torch.isinf(logits).sum())
        raise GenerationError(
            f"the model produced invalid logits ({nan} NaN, {inf} infinite); "
            "the weights may be broken or the dtype too narrow (try --dtype float32)"
        )


def raw_distribution(logits: torch.Tensor) -> torch.Tensor:
    """The model's own distribution: softmax at temperature 1. [..., V] -> [..., V]"""
    return torch.softmax(logits.float(), dim=-1)


def entropy_bits(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in bits over the last dimension (0 * log 0 counts as 0). [..., V] -> [...]"""
    logp = torch.log2(probs.clamp_min(1e-45))
    return -(torch.where(probs > 0, probs * logp, torch.zeros_like(probs))).sum(dim=-1)


def apply_repetition_penalty(
    logits: torch.Tensor, prev_ids: torch.Tensor | Sequence[int] | Sequence[Sequence[int]], penalty: float
) -> torch.Tensor:
    """transformers' convention: for every token already seen, divide a positive logit by
    ``penalty`` and multiply a negative one (each token penalised once).

    logits: [V] or [B, V]; prev_ids: [S] or [B, S] (ids seen so far, prompt included).
    """
    if penalty == 1.0:
        return logits
    ids = torch.as_tensor(prev_ids, dtype=torch.long, device=logits.device)
    if ids.numel() == 0:
        return logits
    squeeze = logits.dim() == 1
    x = logits.unsqueeze(0) if squeeze else logits  # [B, V]
    ids = ids.view(1, -1).expand(x.shape[0], -1) if ids.dim() == 1 else ids  # [B, S]
    seen = torch.gather(x, 1, ids)  # [B, S]
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    out = x.scatter(1, ids, seen)
    return out.squeeze(0) if squeeze else out


def _top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    # Keep every token whose logit reaches the k-th largest (ties at the boundary survive).
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # [B, 1]
    return logits.masked_fill(logits < kth, _NEG_INF)


def _top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    # Drop the least probable tokens whose cumulative mass stays within 1 - p; keep at least one.
    # Equivalently: keep a token iff the tokens more probable than it hold less than p. Sorting a
    # 50k vocabulary every step costs more than the rest of sampling together, so first look for
    # the nucleus among the top few hundred tokens, where it nearly always is.
    V = logits.shape[-1]
    if V >= 4096:
        probs = torch.softmax(logits, dim=-1)  # [B, V]
        k = 256
        while k <= V // 4:
            vals, idx = torch.topk(probs, k, dim=-1)  # [B, k], descending
            if bool((vals.sum(dim=-1) >= p + 1e-4).all()):  # the margin covers rounding
                keep_sorted = (vals.cumsum(dim=-1) - vals) < p
                keep_sorted[..., 0] = True
                keep = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, idx, keep_sorted)
                return logits.masked_fill(~keep, _NEG_INF)
            k *= 4
    return _top_p_sorted(logits, p)


def _top_p_sorted(logits: torch.Tensor, p: float) -> torch.Tensor:
    # transformers' TopPLogitsWarper, step for step.
    sorted_logits, sorted_idx = torch.sort(logits, descending=False, dim=-1)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cum <= (1 - p)
    remove_sorted[..., -1:] = False
    remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)
    return logits.masked_fill(remove, _NEG_INF)


def _min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    # Drop tokens less likely than min_p times the most likely one; the top token always stays.
    probs = torch.softmax(logits, dim=-1)
    remove = probs < min_p * probs.amax(dim=-1, keepdim=True)
    remove.scatter_(-1, probs.argmax(dim=-1, keepdim=True), False)
    return logits.masked_fill(remove, _NEG_INF)


def processed_logits(
    logits: torch.Tensor, params: SamplingParams, prev_ids: torch.Tensor | Sequence | None = None
) -> torch.Tensor:
    """Apply repetition penalty, temperature, top-k, top-p and min-p (not for greedy). [..., V] -> [..., V]"""
    x = logits.float()
    if prev_ids is not None:
        x = apply_repetition_penalty(x, prev_ids, params.repetition_penalty)
    if params.greedy:
        return x
    squeeze = x.dim() == 1
    x = x.unsqueeze(0) if squeeze else x  # [B, V]
    if params.temperature != 1.0:
        x = x / params.temperature
    if params.top_k > 0:
        x = _top_k(x, params.top_k)
    if params.top_p < 1.0:
        x = _top_p(x, params.top_p)
    if params.min_p > 0.0:
        x = _min_p(x, params.min_p)
    return x.squeeze(0) if squeeze else x


def sampling_distribution(
    logits: torch.Tensor, params: SamplingParams, prev_ids: torch.Tensor | Sequence | None = None,
    *, checked: bool = False,
) -> torch.Tensor:
    """The distribution the next token is drawn from. [..., V] -> [..., V] probabilities.

    Greedy (temperature 0): one-hot on the argmax of the penalised logits. ``checked``: the
    caller already knows the logits are finite (the check reads the whole row twice).
    """
    if not checked:
        check_finite(logits)
    x = processed_logits(logits, params, prev_ids)
    if params.greedy:
        return torch.nn.functional.one_hot(x.argmax(dim=-1), x.shape[-1]).to(torch.float32)
    return torch.softmax(x, dim=-1)


def sample(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one id per row. probs [V] -> [] ; [B, V] -> [B]. Zero-probability ids are never drawn.

    Inverse CDF: one uniform number per row against the cumulative sum (float64), found by
    binary search; ~20x faster than ``torch.multinomial`` over a 50k vocabulary.
    """
    squeeze = probs.dim() == 1
    wide = torch.float32 if probs.device.type == "mps" else torch.float64  # MPS has no float64
    p = (probs.unsqueeze(0) if squeeze else probs).to(wide)  # [B, V]
    cdf = p.cumsum(dim=-1)  # [B, V]
    u = torch.rand(p.shape[0], 1, generator=generator, dtype=wide, device=p.device) * cdf[:, -1:]
    ids = torch.searchsorted(cdf, u, right=True).squeeze(-1)  # first index whose cdf exceeds u
    if bool((ids >= p.shape[-1]).any()):  # u rounded up to the total: take the last possible id
        last = p.shape[-1] - 1 - (p > 0).flip(-1).int().argmax(dim=-1)
        ids = torch.where(ids >= p.shape[-1], last, ids)
    return ids[0] if squeeze else ids


def raw_with_entropy(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw distribution and its entropy in bits, in one pass. [..., V] -> ([..., V], [...]). Logits must be finite."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    probs = logp.exp()
    return probs, -(probs * logp).sum(dim=-1) / math.log(2)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def top_tokens(raw: torch.Tensor, used: torch.Tensor, n: int) -> list[tuple[int, float, float]]:
    """The ``n`` most probable ids of the raw distribution: (id, prob in ``used``, raw prob). raw, used: [V]"""
    if n <= 0:
        return []
    vals, idx = largest(raw, n)
    used_vals = used[idx]
    return [(int(i), float(u), float(v)) for i, u, v in zip(idx.tolist(), used_vals.tolist(), vals.tolist())]


CHUNK = 128  # largest() reads a vocabulary in chunks of this many entries


def largest(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(x, k)`` of a row x [V] (values descending, their indices), the same result,
    about ten times faster over a large vocabulary.

    torch's CPU topk walks the row element by element (~0.3 ms over 49k entries, as much as
    a few layers of a small model). Here only the chunks whose maxima are among the k + 1
    largest chunk maxima are searched: when the (k + 1)-th chunk maximum is below the k-th,
    every entry outside the k chosen chunks is below at least k entries inside them. The
    answer is returned only when it is unique (the k + 1 largest values found are all
    different and the chunks do not tie), so it is exactly torch's; otherwise, and for a
    short row, it is torch's topk itself.
    """
    V = x.shape[-1]
    k = min(k, V)
    if x.dim() != 1 or not x.is_contiguous() or V % CHUNK or V // CHUNK <= 2 * (k + 1):
        return torch.topk(x, k)
    chunks = x.view(-1, CHUNK)  # [C, CHUNK]
    cmax, cidx = torch.topk(chunks.amax(dim=-1), k + 1)  # the k + 1 largest chunk maxima
    if not bool(cmax[k] < cmax[k - 1]):
        return torch.topk(x, k)
    picked = chunks[cidx[:k]]  # [k, CHUNK]
    vals, pos = torch.topk(picked.view(-1), k + 1)  # k * CHUNK > k entries: there is a (k + 1)-th
    if not bool((vals[1:] < vals[:-1]).all()):
        return torch.topk(x, k)
    idx = cidx[:k][pos // CHUNK] * CHUNK + pos % CHUNK
    return vals[:k], idx[:k]

