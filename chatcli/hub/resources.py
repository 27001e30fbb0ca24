"""Will it fit? Memory and size checks made before converting or loading a model.

A 7B GGUF dequantised to float32 needs ~28 GB; finding that out by being killed
for memory halfway through is the experience this module prevents. Checks use
the memory the OS reports as available (``MemAvailable``), falling back to the
physical total, and name both numbers and the way out (bfloat16, a smaller model).
"""

from __future__ import annotations

import os
from pathlib import Path

from chatcli.errors import ChatcliError, ModelError
from chatcli.hub.safetensors_header import parse_header

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def fmt_bytes(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def fmt_count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n:,}"


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def available_memory() -> int | None:
    """Bytes the OS can give us now (Linux MemAvailable), else the physical total."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return physical_memory()


def count_parameters(model_dir: Path) -> int | None:
    """Elements in every safetensors file of a directory, from the headers alone."""
    total = 0
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    for f in files:
        try:
            header = parse_header(f)  # strict: a damaged header gives None here, its one-line error at load
        except (OSError, ValueError, ChatcliError):
            return None
        for entry in header.tensors.values():
            n = 1
            for d in entry.shape:
                n *= d
            total += n
    return total


def check_load_fits(model_dir: Path, dtype: str, device: str) -> None:
    """Refuse, with numbers, loading weights that cannot fit in (device) memory."""
    params = count_parameters(model_dir)
    if not params or dtype not in DTYPES_OK:
        return
    need = params * DTYPE_BYTES[dtype]
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        where, have = f"GPU {device}", free
    else:
        where, have = "this machine", available_memory()
    if have and need > 0.9 * have:
        hint = "; use --dtype bfloat16 (half the memory)" if dtype == "float32" else "; use a smaller model"
        raise ModelError(
            f"{Path(model_dir).name} has {fmt_count(params)} parameters: as {dtype} it needs {fmt_bytes(need)} "
            f"but {where} has {fmt_bytes(have)} available{hint}"
        )


DTYPES_OK = frozenset(DTYPE_BYTES)
