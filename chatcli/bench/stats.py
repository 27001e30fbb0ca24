"""Small measuring helpers shared by the runner and the workers: summaries, peak RSS, and the
prefill/decode rates of a baseline given its timing function."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable, Sequence

# times(ids, n) -> (t0, stamps): when a run of n new tokens after ``ids`` started, and when each token came.
Times = Callable[[Sequence[int], int], tuple[float, list[float]]]


def summary(values: list[float]) -> dict:
    """``{"median", "min", "max", "runs"}`` of measured values (at least one)."""
    if not values:
        raise ValueError("no measured values to summarise")
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": list(values)}


def maxrss_mb(ru_maxrss: int) -> float:
    """``ru_maxrss`` in MB (Linux reports kilobytes, macOS bytes)."""
    return ru_maxrss / 1e6 if sys.platform == "darwin" else ru_maxrss * 1024 / 1e6


def own_peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB."""
    import resource

    return maxrss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def prefill_rates(times: Times, ids: Sequence[int], repeats: int) -> list[float]:
    """Prompt tokens/s to the first new token, ``repeats`` runs after one warm-up."""
    rates = []
    for i in range(1 + repeats):  # the first is the warm-up
        t0, stamps = times(ids, 1)
        if i:
            rates.append(len(ids) / (stamps[0] - t0))
    return rates


def decode_rates(times: Times, ids: Sequence[int], n: int, repeats: int) -> list[float]:
    """Tokens/s after the first of ``n`` new tokens, ``repeats`` runs after a warm-up of at most 8 tokens."""
    rates = []
    for i in range(1 + repeats):
        _, t = times(ids, n if i else min(n, 8))
        if i:
            rates.append((len(t) - 1) / (t[-1] - t[0]))  # after the first token, as every system counts it
    return rates
