"""A fresh trainable LoRA adapter on a loaded model (and the reward model's score head).

:func:`attach_trainable` freezes every base parameter, builds a new adapter (A drawn
as PEFT does — Kaiming-uniform with a = sqrt(5) — from the run's seed; B zero, so
the model starts exactly as the base), attaches it through the model's
:class:`~chatcli.lora.manager.AdapterManager` (given by the caller: the loaded
engine's ``adapters``) under :data:`TRAIN_NAME`, and
switches gradients on for its A and B only. A and B (and the reward head) are
float32 even on a bf16 base: :class:`~chatcli.model.lora_linear.LoRALinear` keeps float32
adapters as master weights and runs their low-rank product in float32, so AdamW's
small updates are not rounded away; the frozen base stays in its own dtype. Because
the manager shares the adapter's tensors with the layers, ``manager.save(TRAIN_NAME, dir)`` writes what
was trained; ``manager.disabled([TRAIN_NAME])`` runs the base model (the DPO
reference) with no second copy in memory.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from chatcli.lora.manager import AdapterManager
from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA
from chatcli.model.qlinear import quantization
from chatcli.errors import UsageError

TRAIN_NAME = "finetune"
SHORT_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def parse_targets(text: str) -> tuple[str, ...]:
    """``all-linear`` or a comma list of short names (q_proj,v_proj,...)."""
    text = text.strip()
    if text in ("all-linear", "all"):
        return SHORT_NAMES
    names = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    bad = [n for n in names if n not in SHORT_NAMES]
    if bad or not names:
        raise UsageError(f"invalid --targets {text!r}: use all-linear or a comma list of {', '.join(SHORT_NAMES)}")
    return names


def parse_layers(text: str | None, n_layers: int) -> tuple[int, ...]:
    """None/"all" = every layer; else "0,2,5-7"; "last:N" = the last N layers."""
    if text is None or text.strip() in ("", "all"):
        return tuple(range(n_layers))
    text = text.strip()
    try:
        if text.startswith("last:"):
            k = int(text[5:])
            if not 1 <= k <= n_layers:
                raise ValueError
            return tuple(range(n_layers - k, n_layers))
        out: set[int] = set()
        for part in text.split(","):
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                out.update(range(a, b + 1))
            else:
                out.add(int(part))
    except ValueError:
        raise UsageError(f"invalid --layers {text!r}: use e.g. 0-3,7 or last:4 (the model has {n_layers} layers)") from None
    if not out or min(out) < 0 or max(out) >= n_layers:
        raise UsageError(f"--layers {text!r} is outside 0-{n_layers - 1} (the model has {n_layers} layers)")
    return tuple(sorted(out))


@dataclass(frozen=True)
class LoRASpec:
    rank: int = 8
    alpha: float = 16.0
    rslora: bool = False
    targets: tuple[str, ...] = SHORT_NAMES
    layers: tuple[int, ...] | None = None  # None = all
    dropout: float = 0.0

    def check(self) -> None:
        if self.rank < 1:
            raise UsageError(f"invalid --rank {self.rank}: use an integer >= 1")
        if not math.isfinite(self.alpha) or self.alpha <= 0:
            raise UsageError(f"invalid --alpha {self.alpha}: use a positive number")
        if not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"invalid --dropout {self.dropout}: use 0 <= p < 1")


def target_modules(model: nn.Module, spec: LoRASpec) -> list[str]:
    n_layers = model.config.num_hidden_layers
    layers = set(range(n_layers) if spec.layers is None else spec.layers)
    out = []
    for name, module in model.named_modules():
        m = re.match(r"model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)$", name)
        if m and isinstance(module, nn.Linear) and int(m.group(1)) in layers and m.group(2) in spec.targets:
            out.append(name)
    return out


def attach_trainable(manager: AdapterManager, spec: LoRASpec, seed: int, base_model: str | None = None) -> AdapterManager:
    """Freeze the manager's model, attach a new trainable adapter named :data:`TRAIN_NAME`; returns the manager."""
    model = manager.model
    spec.check()
    method = quantization(model)
    if method is not None:  # the int8/int4 kernels have no backward, and LoRA masters want float bases
        raise UsageError(f"cannot fine-tune an {method}-quantized model: load the base model without --quantize")
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    modules: dict[str, ModuleLoRA] = {}
    for name in target_modules(model, spec):
        lin = model.get_submodule(name)
        A = torch.empty(spec.rank, lin.in_features)
        bound = 1.0 / math.sqrt(lin.in_features)  # kaiming_uniform_(a=sqrt(5)) on [r, in], as nn.Linear / PEFT
        A.uniform_(-bound, bound, generator=gen)
        B = torch.zeros(lin.out_features, spec.rank)
        modules[name] = ModuleLoRA(A=A, B=B, alpha=spec.alpha)  # float32 masters whatever the base dtype
    if not modules:
        raise UsageError("--targets/--layers select no linear layer of this model")
    adapter = LoRAAdapter(modules=modules, use_rslora=spec.rslora, base_model=base_model, source="fine-tuning")
    manager.add(adapter, TRAIN_NAME)
    for pair in lora_pairs(model):
        pair.A.requires_grad_(True)
        pair.B.requires_grad_(True)
        pair.dropout = spec.dropout
    return manager


def lora_pairs(model: nn.Module):
    from chatcli.model.lora_linear import LoRALinear

    return [m.lora[TRAIN_NAME] for m in model.modules() if isinstance(m, LoRALinear) and TRAIN_NAME in m.lora]


def trainable_parameters(model: nn.Module, head: nn.Module | None = None) -> list[tuple[str, nn.Parameter]]:
    """(stable name, parameter) of everything trained, in a fixed order (optimizer and checkpoints)."""
    from chatcli.model.lora_linear import LoRALinear

    out = []
    for name, m in model.named_modules():
        if isinstance(m, LoRALinear) and TRAIN_NAME in m.lora:
            pair = m.lora[TRAIN_NAME]
            out += [(f"{name}.lora_A", pair.A), (f"{name}.lora_B", pair.B)]
    if head is not None:
        out.append(("score.weight", head.weight))
    return out


def new_score_head(model: nn.Module, seed: int) -> nn.Linear:
    """The reward model's scalar head: Linear(hidden -> 1, no bias), as HF's *ForSequenceClassification."""
    gen = torch.Generator().manual_seed(seed + 1)
    head = nn.Linear(model.config.hidden_size, 1, bias=False, dtype=torch.float32)  # float32 like A/B
    with torch.no_grad():
        head.weight.normal_(0.0, 0.02, generator=gen)  # HF's initializer_range
    return head.to(device=model.device)
