"""Small measuring helpers shared by the runner and the workers: summaries and peak RSS."""

from __future__ import annotations

import statistics
import sys


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
