"""Give memory pages back to the system during and after a load: file pages read, code run, free heap.

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

**Library code pages** (:func:`drop_code_pages`). The shared libraries' code pages a process has
run stay mapped, and counted in its memory, for as long as it lives: ``import torch`` alone runs
~48 MiB of libtorch's code (registering every operator, once), and a load runs more (reading,
packing, the tokenizer's JSON parse). Nothing runs most of it again, yet at the end of the default
model's first answer (``generate --quantize int4``) ~100 MiB of library pages were resident, over a
quarter of the process's peak. :func:`drop_code_pages` unmaps, once a load has ended, the pages of
every read-only private mapping of a shared library (``*.so*``) that holds nothing but the file's
own bytes (``Anonymous`` and ``Swap`` 0 kB in ``/proc/self/smaps``: no page of it was ever written,
e.g. relocated or patched by a debugger); code still in use is mapped again from the page cache by
its next call (~300 more minor faults in that first answer, ~1-2 ms; the drop itself ~14 ms).
Measured there: peak RSS 385 -> 332 MB. What the process computes is unchanged. Dropped pages stay
in the page cache, shared and reclaimable, so this lowers the resident set the bench
(``ru_maxrss``) and ``top`` show, not the anonymous memory.
Elsewhere than Linux, or where ``/proc/self/smaps`` cannot be read, it does nothing.

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
from collections.abc import Iterable, Iterator

import torch

_PAGE = mmap.PAGESIZE
_MADV_DONTNEED = 4  # Linux
_PAGEMAP = "/proc/self/pagemap"
_SMAPS = "/proc/self/smaps"


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


def drop_code_pages() -> int:
    """Unmap the resident pages of the shared libraries' clean read-only mappings (see the module
    docstring); returns the bytes that were resident in them (0: nothing dropped)."""
    if sys.platform != "linux":
        return 0
    try:
        with open(_SMAPS, encoding="ascii", errors="replace") as f:  # line by line: no 700 kB string left in the heap
            regions = clean_library_mappings(f)
    except OSError:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    released = 0
    for start, end, resident in regions:
        if libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED) == 0:
            released += resident
    return released


def clean_library_mappings(smaps: Iterable[str]) -> list[tuple[int, int, int]]:
    """``(start, end, resident bytes)`` of each mapping in ``smaps`` (``/proc/PID/smaps``'s lines) that
    may be dropped: private, not writable, of a shared library's file (``*.so`` or ``*.so.N``, not
    deleted), resident, with no anonymous (copy-on-write) or swapped-out page."""
    out = []
    for (span, perms, path), kb in _mappings(smaps):
        name = path.rsplit("/", 1)[-1]
        library = path.startswith("/") and not path.endswith("(deleted)") and (name.endswith(".so") or ".so." in name)
        clean = kb.get("Anonymous") == 0 and kb.get("Swap", 0) == 0  # every page the file's own
        if library and perms[0] == "r" and perms[1] == "-" and perms[3] == "p" and clean and kb.get("Rss", 0) > 0:
            lo, _, hi = span.partition("-")
            out.append((int(lo, 16), int(hi, 16), kb["Rss"] * 1024))
    return out


def _mappings(smaps: Iterable[str]) -> Iterator[tuple[tuple[str, str, str], dict[str, int]]]:
    """Each mapping of smaps' lines: ((address span, permissions, path or ''), {field: kB})."""
    head, kb = None, {}
    for line in smaps:
        key, _, rest = line.partition(" ")
        if key.endswith(":"):  # "Rss:   12 kB" of the mapping above (VmFlags and others are skipped)
            value = rest.split()
            if value and value[0].isdigit():
                kb[key[:-1]] = int(value[0])
            continue
        if head is not None:
            yield head, kb
        fields = line.split(None, 5)  # span perms offset device inode [path]
        head, kb = None, {}
        if len(fields) >= 5:
            head = (fields[0], fields[1], fields[5].strip() if len(fields) == 6 else "")
    if head is not None:
        yield head, kb
