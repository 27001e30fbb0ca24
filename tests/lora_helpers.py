"""Helpers for the LoRA tests: PEFT adapters on tiny models, raw safetensors files."""

from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path

import torch

from tests.tiny import load_hf_oracle

IDS = torch.tensor([[1, 5, 77, 300, 12, 9, 240, 33, 2, 18, 61, 150], [1, 44, 8, 201, 99, 3, 17, 250, 6, 70, 5, 120]])


def peft_model(model_dir: Path, seed: int = 0, **lora_kwargs):
    """The HF oracle wrapped by PEFT with a random non-zero LoRA (``init_lora_weights=False``)."""
    from peft import LoraConfig, get_peft_model

    hf = load_hf_oracle(model_dir)
    torch.manual_seed(seed)
    lora_kwargs.setdefault("init_lora_weights", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = get_peft_model(hf, LoraConfig(**lora_kwargs))
    _randomize_saved(pm, seed)
    return pm.eval()


def _randomize_saved(pm, seed: int) -> None:
    """modules_to_save start as copies of the base; perturb them so a replacement is visible."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if ".modules_to_save." in name:
                p.add_(0.5 * torch.randn(p.shape, generator=gen))


def save_peft(pm, out: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm.save_pretrained(out)
    return out


@torch.no_grad()
def logits(model, ids: torch.Tensor = IDS) -> torch.Tensor:
    out = model(ids)
    return (out.logits if hasattr(out, "logits") else out).float()


def write_raw_safetensors(path: Path, header: dict | bytes, data: bytes, header_len: int | None = None) -> Path:
    """A safetensors file with exactly this header and data (for corrupt-file tests)."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(raw) if header_len is None else header_len
    path.write_bytes(struct.pack("<Q", n) + raw + data)
    return path


def write_config(folder: Path, **fields) -> Path:
    cfg = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], **fields}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return folder
