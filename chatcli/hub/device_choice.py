"""Which device and dtype a model loads on: ``auto`` and the names people type, checked.

``resolve_device("auto")`` picks cuda, then mps, then cpu; a named device that this machine lacks is
a one-line :class:`~chatcli.errors.UsageError`. ``resolve_dtype`` maps the dtype names (``float32``,
``bf16``, ``half``, ...) to torch dtypes, and ``auto`` to what suits the device.
"""

from __future__ import annotations

import torch

from chatcli.errors import UsageError

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}  # fmt: skip

def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda, mps, cpu (first available); otherwise check the named device exists."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("device cuda requested but no CUDA GPU is available: use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"device {name} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    elif device.type == "mps" and not _mps_available():
        raise UsageError("device mps requested but Metal is not available: use --device cpu or auto")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unsupported device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return device


def resolve_dtype(name: str | torch.dtype = "auto", device: torch.device | str | None = None) -> torch.dtype:
    """A dtype name -> torch dtype. ``auto``: bfloat16 on a GPU that supports it, float16 on
    other GPUs, float32 on CPU (CPU half-precision matmuls are slow and less exact)."""
    if isinstance(name, torch.dtype):
        if name not in (torch.float32, torch.bfloat16, torch.float16):
            raise UsageError(f"unsupported dtype {name}: use float32, bfloat16 or float16")
        return name
    key = (name or "auto").strip().lower().removeprefix("torch.")
    if key == "auto":
        dev = torch.device(device) if device is not None else resolve_device("auto")
        if dev.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if dev.type == "mps":
            return torch.float16
        return torch.float32
    if key not in _DTYPES:
        raise UsageError(f"unknown dtype {name!r}: use auto, float32, bfloat16 or float16")
    return _DTYPES[key]


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())
