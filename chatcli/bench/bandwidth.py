"""Single-stream read bandwidth, measured as a large tensor sum (the decode floor's denominator).

A float32 tensor far larger than the caches is summed on one thread; bytes / time is
how fast one core streams memory, which bounds a decode step that reads every weight
once: floor tokens/s = bandwidth / (weight bytes + KV-cache bytes per token).
Runs as the ``python`` system's ``bandwidth`` group of :mod:`chatcli.bench.worker`.
"""

from __future__ import annotations

import time

from chatcli.bench.spec import BenchSpec


def run(spec: BenchSpec, group: str) -> dict:
    if group != "bandwidth":
        raise ValueError(f"the bandwidth worker has no group {group!r}")
    return {"figures": {"read_gb_s": read_bandwidth(spec.sizes.bandwidth_mb, 2 + 2 * spec.repeats)},
            "info": {"tensor_mb": spec.sizes.bandwidth_mb, "threads": 1}, "notes": []}  # fmt: skip


def read_bandwidth(mb: int, runs: int) -> list[float]:
    """GB/s of ``runs`` timed sums of an ``mb``-megabyte float32 tensor on one thread (after a warm-up)."""
    import torch

    torch.set_num_threads(1)
    x = torch.ones(mb * 1_000_000 // 4, dtype=torch.float32)  # [N], touched once by the fill
    x.sum()  # warm-up
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        x.sum()
        rates.append(x.nbytes / (time.perf_counter() - t0) / 1e9)
    return rates


def floor_tokens_per_s(read_gb_s: float, weight_bytes: int, kv_bytes_per_position: int, context: float) -> tuple[float, float]:
    """(bytes read per decoded token, the tokens/s that memory allows at ``read_gb_s``)."""
    per_token = weight_bytes + kv_bytes_per_position * context
    return per_token, read_gb_s * 1e9 / per_token
