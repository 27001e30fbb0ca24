"""What a calibration is valid for: the CPU, torch, the thread budget and the model's dtype, quantisation and shape.

Two loads with the same :func:`calibration_key` run the same kernels on the same shapes on the
same kind of core, so one measurement serves both. The CPU is its model name and a digest of its
feature flags (a virtual machine often names its CPU only "Intel(R) Xeon(R) Processor"; the
flags tell AVX-512 and AMX apart). The thread budget is torch's thread count at load time
(``--threads``, the environment, torch's default): a calibration never picks more threads than
that, so each budget has its own. Adapters are not part of it: they add the same side path to
every candidate.
"""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path

import torch
from torch import nn

from chatcli.model.int4 import Int4Linear
from chatcli.model.qlinear import QuantizedLinear

CPUINFO = Path("/proc/cpuinfo")


def cpu_identity(cpuinfo: Path = CPUINFO) -> tuple[str, str]:
    """(the CPU's model name, a 12-hex digest of its feature flags, "" where unknown)."""
    name, flags = "", ""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        field, _, value = line.partition(":")
        field = field.strip().lower()
        if field in ("model name", "processor", "cpu model", "hardware") and not name and value.strip() \
                and not value.strip().isdigit():
            name = value.strip()
        elif field in ("flags", "features") and not flags:
            flags = " ".join(sorted(value.split()))
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    return name, hashlib.sha256(flags.encode()).hexdigest()[:12] if flags else ""


def quantization_label(model: nn.Module) -> str:
    """``none``, or the quantised layers' kinds: ``int8``, ``int4-g32+int8`` (an int4 model with an int8 head)."""
    kinds = set()
    for m in model.modules():
        if isinstance(m, QuantizedLinear):
            kinds.add(f"{m.method}-g{m.group_size}" if isinstance(m, Int4Linear) else m.method)
    return "+".join(sorted(kinds)) if kinds else "none"


# The measuring procedure's version, part of every key: raised when a change to the measuring would choose
# differently, so calibrations made the old way are measured again once. 2: the bf16 paths get every round
# (one round had chosen aten's plain mm for a 1.5B model at half oneDNN's speed).
METHOD = 2


def calibration_key(model: nn.Module, threads: int | None = None) -> dict:
    """The key of ``model`` (a DecoderLM on the CPU) under ``threads`` (default: torch's count now)."""
    cfg = model.config
    cpu, flags = cpu_identity()
    return {
        "method": METHOD,
        "cpu": cpu,
        "cpu_flags": flags,
        "torch": torch.__version__,
        "threads": int(threads if threads is not None else torch.get_num_threads()),
        "dtype": str(model.dtype).removeprefix("torch."),
        "quantize": quantization_label(model),
        "shape": {
            "model_type": cfg.model_type, "hidden": cfg.hidden_size, "intermediate": cfg.intermediate_size,
            "layers": cfg.num_hidden_layers, "heads": cfg.num_attention_heads, "kv_heads": cfg.num_key_value_heads,
            "head_dim": cfg.head_dim, "vocab": cfg.vocab_size, "tied": bool(cfg.tie_word_embeddings),
        },
    }  # fmt: skip
