"""Give memory pages back to the system during and after a load: file pages read, free heap pages.

**File pages** (:func:`drop_file_pages`). Checkpoint weights are views of the mapped safetensors file: reading one (to quantise it)
makes its pages resident, and they stay counted in the process's memory while the mapping
lives. Quantising the default model's tied LM head reads its whole 113 MB float32 table, which
stayed resident at the load's peak even though nothing reads it again.
:func:`drop_file_pages` tells the kernel to drop them (``madvise(MADV_DONTNEED)``); a later read
of the same memory maps the pages from the file again, with the same bytes.

That is only lossless when every page in the range holds exactly the file's bytes. So before
dropping, ``/proc/self/pagemap`` is read for the range: each page must be either not resident
and not swapped out (nothing in it yet), or resident *and* backed by a file (or shared) page.
A page written by this process (copy-on-write: a private, anonymous copy), any ordinary
anonymous memory and anything swapped out fail the check, and then nothing is dropped. The
check and the drop are not atomic: call this only on weights no other thread writes meanwhile
(the checkpoint loader, before the model is handed out). Elsewhere than Linux, or where
``/proc/self/pagemap`` cannot be read, it does nothing.

**Free heap pages** (:func:`trim_heap`). glibc's allocator keeps memory freed by the load
(the tokenizer's JSON parse, quantisation's temporaries, the float layers dropped) mapped
for reuse; ``malloc_trim(0)`` returns its free pages. Measured on the default model with
``--quantize int4``: the process's peak 432 -> 412 MB. Other C libraries: nothing.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys

import torch

_PAGE = mmap.PAGESIZE
_MADV_DONTNEED = 4  # Linux
_PAGEMAP = "/proc/self/pagemap"


def drop_file_pages(t: torch.Tensor) -> int:
    """Drop the resident pages wholly inside ``t``'s memory when they are the mapped file's
    own (see the module docstring); returns the bytes of address range released (0: none)."""
    if sys.platform != "linux" or t.device.type != "cpu" or t.numel() == 0:
        return 0
    span = sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride())) + 1  # elements from first to last
    lo = t.data_ptr()
    hi = lo + span * t.element_size()
    start, end = -(-lo // _PAGE) * _PAGE, hi // _PAGE * _PAGE  # whole pages only: neighbours keep theirs
    if end <= start or not _file_backed(start, end):
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED) != 0:
        return 0
    return end - start


def _file_backed(start: int, end: int) -> bool:
    """Whether every page of [start, end) is empty or a resident file (or shared) page."""
    pages = (end - start) // _PAGE
    try:
        fd = os.open(_PAGEMAP, os.O_RDONLY)
    except OSError:
        return False
    try:
        raw = os.pread(fd, 8 * pages, start // _PAGE * 8)
    except OSError:
        return False
    finally:
        os.close(fd)
    if len(raw) != 8 * pages:
        return False
    entries = torch.frombuffer(bytearray(raw), dtype=torch.int64)
    present = entries < 0  # bit 63: resident; 62: swapped out; 61: a file page (or shared)
    swapped = (entries >> 62) & 1 == 1
    file = (entries >> 61) & 1 == 1
    return bool((~swapped & (~present | file)).all())


def trim_heap() -> bool:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim``); False where there is none."""
    if sys.platform != "linux":
        return False
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except AttributeError:  # not glibc (musl has no malloc_trim)
        return False
    trim.argtypes = [ctypes.c_size_t]
    return bool(trim(0))
