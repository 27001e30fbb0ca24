"""Library code pages given back after a load (chatcli.model.page_release.drop_code_pages, issue 18):
only clean read-only mappings of shared libraries are dropped, what runs after computes the same,
and every load gives them back."""

from __future__ import annotations

import sys

import pytest
import torch

from chatcli.hub import checkpoint, packed_cache
from chatcli.hub.checkpoint import load_checkpoint
from chatcli.model import page_release
from chatcli.model.page_release import clean_library_mappings, drop_code_pages
from chatcli.model.quantize import quantize_model
from tests.lora_helpers import IDS

SMAPS = """\
7f0000000000-7f0000100000 r-xp 00000000 fe:00 11 /venv/torch/lib/libtorch_cpu.so
Size:               1024 kB
Rss:                 512 kB
Anonymous:             0 kB
Swap:                  0 kB
VmFlags: rd ex mr mw me sd
7f0000100000-7f0000200000 r--p 00100000 fe:00 11 /venv/torch/lib/libtorch_cpu.so
Rss:                 256 kB
Anonymous:           256 kB
Swap:                  0 kB
7f0000200000-7f0000300000 rw-p 00200000 fe:00 11 /venv/torch/lib/libtorch_cpu.so
Rss:                  64 kB
Anonymous:            64 kB
7f0000300000-7f0000400000 r--p 00000000 fe:00 12 /usr/lib/libstdc++.so.6.0.30
Rss:                  16 kB
Anonymous:             0 kB
Swap:                  0 kB
7f0000400000-7f0000500000 r-xs 00000000 fe:00 13 /dev/shm/shared.so
Rss:                  16 kB
Anonymous:             0 kB
7f0000500000-7f0000600000 r-xp 00000000 fe:00 14 /tmp/package/model.so (deleted)
Rss:                  16 kB
Anonymous:             0 kB
7f0000600000-7f0000700000 r--p 00000000 fe:00 15 /cache/packed/weights.safetensors
Rss:                1024 kB
Anonymous:             0 kB
7f0000700000-7f0000800000 r-xp 00000000 00:00 0
Rss:                   8 kB
Anonymous:             8 kB
7f0000800000-7f0000900000 r-xp 00000000 fe:00 16 /venv/lib/libnot-resident.so
Rss:                   0 kB
Anonymous:             0 kB
7f0000900000-7f0000a00000 r-xp 00000000 fe:00 17 /venv/lib/libswapped.so
Rss:                   4 kB
Anonymous:             0 kB
Swap:                  4 kB
7f0000a00000-7f0000b00000 r-xp 00000000 fe:00 18 /opt/my libs/libspace.so.1
Rss:                   4 kB
Anonymous:             0 kB
Swap:                  0 kB
"""


def test_only_clean_private_read_only_library_mappings_are_chosen():
    got = clean_library_mappings(SMAPS.splitlines(keepends=True))
    assert got == [
        (0x7F0000000000, 0x7F0000100000, 512 * 1024),  # libtorch's code: dropped
        (0x7F0000300000, 0x7F0000400000, 16 * 1024),  # a versioned library's read-only data: dropped
        (0x7F0000A00000, 0x7F0000B00000, 4 * 1024),  # a path with a space
    ]  # not: relocated (anonymous) pages, writable, shared, deleted, weights, anonymous, empty or swapped mappings


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/self/smaps and madvise are Linux's")
def test_dropped_code_pages_come_back_and_compute_the_same(tiny_model_dir):
    model = load_checkpoint(tiny_model_dir)
    with torch.inference_mode():
        before = model(IDS).clone()
        resident = sum(r for *_, r in clean_library_mappings(open("/proc/self/smaps")))
        assert drop_code_pages() > 0
        after_drop = sum(r for *_, r in clean_library_mappings(open("/proc/self/smaps")))
        assert after_drop < resident / 2  # only what ran since (the interpreter) is back
        assert torch.equal(model(IDS), before)


def test_elsewhere_than_linux_nothing_is_dropped(monkeypatch):
    monkeypatch.setattr(page_release.sys, "platform", "darwin")
    assert drop_code_pages() == 0


def test_every_load_gives_code_pages_back(tiny_model_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(checkpoint, "drop_code_pages", lambda: calls.append(1) or 0)
    load_checkpoint(tiny_model_dir)
    assert calls == [1]
    mapped = []
    real_load_built = packed_cache.load_built
    monkeypatch.setattr(packed_cache, "load_built", lambda *a: mapped.append(real_load_built(*a)) or mapped[-1])
    for _ in range(2):  # builds (and keeps) the int4 model, then maps the kept one
        load_checkpoint(tiny_model_dir, transform=lambda m: quantize_model(m, "int4"), built="int4/g32")
    assert mapped == [False, True] and calls == [1, 1, 1]
