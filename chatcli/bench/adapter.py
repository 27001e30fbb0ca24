"""The adapter the adapter figures load: rank R on every linear layer of every block, random.

Written once per run into a temporary folder in PEFT's format (chatcli's own
writer), so chatcli and PEFT load the same files. Module names and shapes come
from the checkpoint's safetensors headers: no model is built or loaded for it.
"""

from __future__ import annotations

from pathlib import Path

LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def linear_shapes(model_dir: Path) -> dict[str, tuple[int, int]]:
    """``{"model.layers.N.self_attn.q_proj": (out, in), ...}`` from the weight files' headers."""
    from chatcli.hub.checkpoint import weight_files
    from chatcli.hub.safetensors_io import read_header

    shapes = {}
    for file in weight_files(model_dir):
        header, _, _ = read_header(file)
        for key, entry in header.items():
            module, _, part = key.rpartition(".")
            if part == "weight" and module.rpartition(".")[2] in LINEAR and len(entry.get("shape", ())) == 2:
                shapes[module] = tuple(entry["shape"])
    return shapes


def write_random_adapter(model_dir: Path, out_dir: Path, rank: int, seed: int = 1) -> Path:
    """A rank-``rank`` LoRA on every linear layer (B small but non-zero, so it changes the outputs)."""
    import torch

    from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA, write_adapter

    shapes = linear_shapes(model_dir)
    if not shapes:
        raise ValueError(f"no linear layers named {', '.join(LINEAR)} in {model_dir}")
    gen = torch.Generator().manual_seed(seed)
    modules = {}
    for name, (out_f, in_f) in sorted(shapes.items()):
        modules[name] = ModuleLoRA(
            A=torch.randn(rank, in_f, generator=gen) / in_f**0.5,  # [r, in]
            B=0.01 * torch.randn(out_f, rank, generator=gen),  # [out, r]
            alpha=2.0 * rank,
        )
    return write_adapter(LoRAAdapter(modules=modules, base_model=str(model_dir)), out_dir)
