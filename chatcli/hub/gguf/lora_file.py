"""LoRA adapters as a GGUF adapter file, for llama.cpp's ``--lora`` (and Ollama's ``ADAPTER``).

The layout is the one llama.cpp's convert_lora_to_gguf.py writes and
``llama_adapter_lora_init`` reads: ``general.type`` ``adapter``, ``adapter.type``
``lora``, ``adapter.lora.alpha`` (float32), ``general.architecture`` of the base, and
per targeted matrix ``blk.N.attn_q.weight.lora_a`` (numpy ``[r, in]``, PEFT's A) and
``.lora_b`` (``[out, r]``, PEFT's B). llama.cpp adds ``scale · alpha / r · B·A``
(``scale · B·A`` when alpha is 0) with r read from B's shape.

Two things differ from PEFT's tensors:

- llama.cpp's q and k matrices are stored permuted per head (:func:`.llama.permute_rotary`);
  ΔW = B·A must be permuted the same way, which moves B's rows only.
- llama.cpp has one alpha per file. When every module shares PEFT's rank and alpha (and
  rsLoRA is off), alpha is written as is and B unchanged; otherwise each B is multiplied by
  its own scaling factor and alpha is written as 0, so llama.cpp applies exactly
  ``scale · c_module · B·A`` either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chatcli.errors import UsageError
from chatcli.hub.gguf.gguf_out import Progress, TensorOut, write_gguf
from chatcli.hub.gguf.llama import gguf_name, permute_rotary
from chatcli.model.config import ModelConfig


@dataclass(frozen=True)
class LoraPair:
    """One targeted matrix: PEFT's A [r, in] and B [out, r] as float32, and its scaling factor."""

    A: np.ndarray
    B: np.ndarray
    scaling: float  # alpha / r, or alpha / sqrt(r) with rsLoRA
    alpha: float


def write_gguf_lora(
    out: Path, pairs: Mapping[str, LoraPair], config: ModelConfig, *, name: str = "", progress: Progress | None = None,
) -> tuple[int, float]:
    """Write the adapter ``pairs`` (HF module name -> pair) for a base with ``config``; return (size, alpha written)."""
    heads = {"attn_q.weight": config.num_attention_heads, "attn_k.weight": config.num_key_value_heads}
    plain = len({(p.A.shape[0], p.alpha, p.scaling) for p in pairs.values()}) == 1 and all(
        abs(p.scaling - p.alpha / p.A.shape[0]) <= 1e-9 * max(1.0, abs(p.scaling)) for p in pairs.values())
    alpha = float(next(iter(pairs.values())).alpha) if plain and pairs else 0.0
    tensors: list[TensorOut] = []
    for module in sorted(pairs, key=_order):
        target = gguf_name(f"{module}.weight")
        if target is None or target in ("token_embd.weight", "output.weight"):
            raise UsageError(f"cannot export this adapter to GGUF: llama.cpp takes LoRA on the layers' linear "
                             f"matrices only, not on {module}")
        p = pairs[module]
        n_head = next((n for suffix, n in heads.items() if target.endswith(suffix)), None)
        factor = 1.0 if plain else p.scaling
        tensors.append(TensorOut(f"{target}.lora_a", tuple(p.A.shape), "F32", lambda p=p: p.A))
        tensors.append(TensorOut(f"{target}.lora_b", tuple(p.B.shape), "F32",
                                 lambda p=p, n=n_head, f=factor: _b(p.B, n, f)))

    def metadata(w) -> None:
        w.add_type("adapter")
        w.add_string("adapter.type", "lora")
        w.add_float32("adapter.lora.alpha", alpha)
        if name:
            w.add_name(name)

    size = write_gguf(Path(out), "llama", metadata, tensors, progress, stage="writing GGUF LoRA")
    return size, alpha


def _b(B: np.ndarray, n_head: int | None, factor: float) -> np.ndarray:
    out = B.astype(np.float32) * np.float32(factor) if factor != 1.0 else B.astype(np.float32)
    return permute_rotary(out, n_head) if n_head is not None else out


def _order(module: str) -> tuple[int, str]:
    parts = module.split(".")
    return (int(parts[2]) if module.startswith("model.layers.") and parts[2].isdigit() else -1, module)
