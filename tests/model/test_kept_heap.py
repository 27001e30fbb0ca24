"""kept_heap: inside it, freed large blocks are reused instead of being unmapped and faulted in again.

Measured in a fresh process: glibc's state after any earlier kept_heap in the test session (the
trainer's loop enters it) decides where a later block comes from."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from chatcli.model.training.kept_heap import _glibc, kept_heap

_PROBE = r"""
import json, resource, torch
from chatcli.model.training.kept_heap import kept_heap
N = 10 * 2**20  # 40 MiB: past glibc's largest mmap threshold (32 MiB), so by default mmap'ed afresh each time
def faults_per_block(blocks):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(blocks):
        torch.empty(N).fill_(1.0)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / blocks
outside = faults_per_block(3)
with kept_heap() as applies:
    # The first blocks come from a growing heap (an aligned request does not always fit the block just
    # freed); once the heap has reached its high-water mark, blocks are served from pages already touched.
    faults_per_block(16)
    inside = faults_per_block(8)
print(json.dumps({"applies": applies, "outside": outside, "inside": inside,
                  "pages": N * 4 // resource.getpagesize()}))
"""


@pytest.mark.skipif(_glibc() is None, reason="glibc's malloc only")
def test_inside_freed_pages_are_reused_and_outside_they_are_not():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["applies"]
    assert got["outside"] > 0.9 * got["pages"]  # every block faulted in afresh
    assert got["inside"] < 0.1 * got["pages"]  # the same pages, reused


def test_elsewhere_it_does_nothing(monkeypatch):
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    with kept_heap() as applies:
        assert applies is False
