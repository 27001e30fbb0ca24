"""The bench's "per-token time outside the matrix products": a share of one profiled decode, in [0, 1].

``chatcli_worker.outside_share`` takes the window's time and the product kernels' time from the
same profiled steps and merges the kernels' intervals before summing them, so the figure built
from it (that share of 1 / decode tok/s) can neither go negative nor exceed the step time,
whatever the profiler recorded. It read -11.8 ms for bfloat16 when the two halves came from
different runs.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from chatcli.api import load_model
from chatcli.bench.chatcli_worker import _decode, _outside_share, decode_ids, outside_share
from chatcli.bench.spec import QUICK, BenchSpec


def _event(name: str, start: float, end: float, thread: int = 1):
    return SimpleNamespace(name=name, thread=thread, time_range=SimpleNamespace(start=start, end=end))


def test_kernels_are_counted_once_and_only_inside_the_window():
    window = _event("chatcli-decode", 100, 200)
    events = [
        window,
        _event("aten::addmm", 110, 130), _event("aten::mm", 115, 125),  # nested: 20 us, not 30
        _event("aten::_weight_int4pack_mm_for_cpu", 140, 150),
        _event("aten::rms_norm", 150, 160),  # not a product
        _event("aten::bmm", 190, 260),  # reaches past the window: 10 us of it
        _event("aten::mm", 50, 90),  # before the window
        _event("aten::mm", 120, 180, thread=2),  # another thread
    ]
    assert outside_share(events, window) == pytest.approx(1 - (20 + 10 + 10) / 100)


@pytest.mark.parametrize("spans", [
    [(0, 100)],  # a kernel covering the whole window
    [(0, 60), (40, 100), (10, 90), (-50, 150)],  # overlapping, nested, larger than the window
    [],
])  # fmt: skip
def test_the_share_stays_between_0_and_1(spans):
    window = _event("chatcli-decode", 0, 100)
    share = outside_share([window] + [_event("aten::mm", a, b) for a, b in spans], window)
    assert 0 <= share <= 1
    assert share == (1.0 if not spans else 0.0)


def test_a_profiled_decode_of_the_tiny_model(tiny_model_dir):
    lm = load_model(str(tiny_model_dir), device="cpu")
    share, profiled_ms = _outside_share(lm.generator, decode_ids(lm.tokenizer), 6)
    assert 0 < share < 1 and profiled_ms > 0
    spec = BenchSpec(model=str(tiny_model_dir), path=str(tiny_model_dir), sizes=QUICK, repeats=2, quick=True)
    figures, info = _decode(lm, spec)
    assert len(figures["decode_outside_ms"]) == 2
    for rate, outside in zip(figures["decode_tps"], figures["decode_outside_ms"]):
        assert 0 < outside < 1e3 / rate  # a part of the step, never negative
    assert 0 < info["outside_share"] < 1 and info["products_ms_per_token"] > 0
