"""kept_heap: inside it, a freed large block is reused instead of being unmapped and faulted in again."""

from __future__ import annotations

import platform
import resource

import pytest
import torch

from chatcli.model.training.kept_heap import _glibc, kept_heap


def _faults_of_two_allocations(n: int) -> int:
    """Minor page faults while a buffer of n floats is allocated, touched, freed, and allocated and touched again."""
    torch.empty(n).fill_(1.0)  # warm: the allocator's own bookkeeping
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(n).fill_(1.0)
    torch.empty(n).fill_(2.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(_glibc() is None, reason="glibc's malloc only")
def test_inside_the_pages_of_a_freed_block_are_reused_and_outside_they_are_not():
    n = 16 * 2**20  # 64 MiB: past glibc's largest mmap threshold, so outside it is mmap'ed each time
    outside = _faults_of_two_allocations(n)
    with kept_heap() as applies:
        assert applies
        _faults_of_two_allocations(n)  # the first block inside comes from the heap: its pages fault once
        inside = _faults_of_two_allocations(n)
    after = _faults_of_two_allocations(n)
    pages = 2 * n * 4 // resource.getpagesize()
    assert outside > 0.9 * pages and after > 0.9 * pages  # fresh pages both times, before and after
    assert inside < 0.1 * pages  # the same pages, reused


def test_elsewhere_it_does_nothing(monkeypatch):
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    with kept_heap() as applies:
        assert applies is False
