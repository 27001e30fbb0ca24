"""PEFT's LoRA format, read and written: ``adapter_config.json`` + ``adapter_model.safetensors``.

An adapter is a directory holding both files, or a ``.safetensors`` file with its
config beside it (``adapter_config.json`` in the same folder, or ``<stem>.json``).
The config is parsed by :mod:`chatcli.lora.config` (what is honoured, what
is refused); :func:`~chatcli.lora.plan.plan_adapter` runs every check that needs no
model, :func:`read_adapter` adds the checks against the model
(:mod:`chatcli.lora.validate`) before returning a :class:`LoRAAdapter`, and
:func:`write_adapter` writes the same format so PEFT loads it. Key names go through
the one table in :mod:`chatcli.lora.peft_keys`. A ``SEQ_CLS`` reward model's
``score`` head is read into ``LoRAAdapter.heads``. The names of those modules are
re-exported here: this is the format's public face.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from chatcli.hub.base_ref import BaseRef
from chatcli.hub.safetensors_header import HeaderError
from chatcli.hub.safetensors_io import open_mapped
from chatcli.lora.config import (  # noqa: F401  (re-exported: the format's public names)
    DEFAULT_TARGETS,
    HEAD_MODULES,
    SAVED_MODULES,
    SEQ_CLS,
    AdapterConfig,
    short_repr,
)
from chatcli.lora.peft_keys import KEY_SUFFIXES, PEFT_PREFIX, parse_key, peft_key  # noqa: F401  (re-exported)
from chatcli.lora.plan import (  # noqa: F401  (re-exported)
    CONFIG_NAME,
    WEIGHTS_NAME,
    AdapterPlan,
    adapter_files,
    plan_adapter,
    read_config,
)
from chatcli.lora.validate import (
    DEFAULT_MAX_RANK,
    AdapterError,
    ModuleShapes,
    check_against_model,
    check_finite,
)


# --- adapters in memory -----------------------------------------------------------------------


@dataclass
class ModuleLoRA:
    A: torch.Tensor  # [r, in]
    B: torch.Tensor  # [out, r]
    alpha: float

    @property
    def r(self) -> int:
        return int(self.A.shape[0])


@dataclass
class LoRAAdapter:
    """One adapter's tensors and settings, independent of any model."""

    modules: dict[str, ModuleLoRA]  # module name -> A, B, alpha
    use_rslora: bool = False
    saved: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # "lm_head" -> {"weight": ...}
    # Copies of base weights saved with the adapter (PEFT's save_embedding_layers): they must equal
    # the model's own, otherwise the adapter was trained on a changed (e.g. resized) model.
    expected_base: dict[str, torch.Tensor] = field(default_factory=dict)
    base_model: str | None = None
    base_revision: str | None = None
    base_record: dict = field(default_factory=dict)  # chatcli's record of the base (config.AdapterConfig)
    source: str | None = None
    # SEQ_CLS heads by name ("score" -> weight [num_labels, hidden]); a reward model's scalar head.
    heads: dict[str, torch.Tensor] = field(default_factory=dict)

    def num_params(self) -> int:
        n = sum(m.A.numel() + m.B.numel() for m in self.modules.values())
        return n + sum(t.numel() for parts in self.saved.values() for t in parts.values())

    def config(self) -> AdapterConfig:
        """The PEFT config that reproduces these modules: exact names, patterns for exceptions."""
        ranks = [m.r for m in self.modules.values()] or [8]
        alphas = [m.alpha for m in self.modules.values()] or [8.0]
        r = max(set(ranks), key=ranks.count)
        alpha = max(set(alphas), key=alphas.count)
        names = sorted(self.modules)
        return AdapterConfig(
            r=r,
            lora_alpha=alpha,
            use_rslora=self.use_rslora,
            target_modules=names,
            rank_pattern={re.escape(n): self.modules[n].r for n in names if self.modules[n].r != r},
            alpha_pattern={re.escape(n): self.modules[n].alpha for n in names if self.modules[n].alpha != alpha},
            modules_to_save=[{"model.embed_tokens": "embed_tokens"}.get(m, m) for m in sorted(self.saved)],
            base_model_name_or_path=self.base_model,
            task_type=SEQ_CLS if self.heads else "CAUSAL_LM",
            heads=sorted(self.heads),
            revision=self.base_revision,
            base_record=dict(self.base_record),
        )


# --- reading and writing ------------------------------------------------------------------------


def read_adapter(
    path: str | Path,
    model: ModuleShapes,
    *,
    max_rank: int = DEFAULT_MAX_RANK,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> LoRAAdapter:
    """Read and check an adapter against ``model``'s shapes; nothing of the model is touched."""
    plan = plan_adapter(path, max_rank=max_rank)
    source, entries = plan.source, plan.entries
    config = plan.config.with_linear_names(model.linears)
    matcher = config.matcher(source, deadline=plan.deadline)  # the same one-second budget, continued
    if config.target_modules and not any(matcher.targets(m) for m in model.linears):
        raise AdapterError(
            f"{source}: target_modules {short_repr(plan.config.target_modules)} selects no linear layer of this model "
            "(PEFT refuses it: target modules not found in the base model)"
        )
    shapes = {
        m: (entries[p["A"]].shape, entries[p["B"]].shape, matcher.rank_alpha(m)[0]) for m, p in plan.lora_keys.items()
    }
    saved_shapes = {m: (entries[p["weight"]].shape, p["weight"]) for m, p in plan.saved_keys.items()}
    for m, key in plan.base_keys.items():
        saved_shapes.setdefault(m, (entries[key].shape, key))
    check_against_model(shapes, saved_shapes, model, source, max_rank)
    untargeted = [m for m in plan.lora_keys if not matcher.targets(m)]  # all-linear, now resolved
    if untargeted:
        raise AdapterError(
            f"{source}: has tensors for {untargeted[0]}, which adapter_config.json does not target "
            "(check target_modules, layers_to_transform, exclude_modules)"
        )
    hidden = model.linears.get("model.layers.0.self_attn.q_proj", (None, None))[1]
    for m, key in plan.head_keys.items():
        shape = entries[key].shape
        if hidden is not None and shape[1] != hidden:
            raise AdapterError(f"{source}: head {m} has shape {tuple(shape)}; expected [labels, {hidden}] for this model")

    tensors: dict[str, torch.Tensor] = {}
    try:
        with open_mapped(plan.weights, checked=True) as f:
            for key in entries:
                tensors[key] = f.get_tensor(key)
    except HeaderError as e:
        raise AdapterError(f"{source} is not a valid safetensors file ({e}): re-save or re-download the adapter") from None
    check_finite(tensors, source)

    def load(key: str) -> torch.Tensor:
        return tensors[key].to(device=device, dtype=dtype)

    modules = {
        m: ModuleLoRA(A=load(p["A"]), B=load(p["B"]), alpha=matcher.rank_alpha(m)[1]) for m, p in plan.lora_keys.items()
    }
    saved = {m: {part: load(k) for part, k in p.items()} for m, p in plan.saved_keys.items()}
    return LoRAAdapter(
        modules=modules,
        use_rslora=config.use_rslora,
        saved=saved,
        expected_base={m: load(k) for m, k in plan.base_keys.items()},
        heads={m: tensors[k].to(device=device, dtype=torch.float32) for m, k in plan.head_keys.items()},
        base_model=config.base_model_name_or_path,
        base_revision=config.revision,
        base_record=dict(config.base_record),
        source=str(Path(path).expanduser()),
    )


def write_adapter(adapter: LoRAAdapter, out_dir: str | Path, base: BaseRef | None = None) -> Path:
    """Write ``adapter`` in PEFT's format to ``out_dir`` (created); returns the folder.

    ``base`` (the model the adapter is on, when known) is recorded as PEFT finds it:
    ``base_model_name_or_path`` its Hugging Face id (else its folder), ``revision`` its Hub
    commit, and chatcli's name and weights sha256 under the ``chatcli`` key."""
    from safetensors.torch import save_file

    if base is not None:
        adapter = replace(adapter, base_model=base.peft_name, base_revision=base.revision, base_record=base.extra())

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for module, m in sorted(adapter.modules.items()):
        tensors[peft_key(module, "A")] = m.A.detach().to("cpu").contiguous()
        tensors[peft_key(module, "B")] = m.B.detach().to("cpu").contiguous()
    for module, parts in sorted(adapter.saved.items()):
        for part, t in parts.items():
            tensors[peft_key(module, part)] = t.detach().to("cpu").contiguous()
    for module, t in sorted(adapter.heads.items()):
        tensors[peft_key(module, "weight")] = t.detach().to("cpu").contiguous()
    save_file(tensors, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    (out / CONFIG_NAME).write_text(json.dumps(adapter.config().to_dict(), indent=2) + "\n", encoding="utf-8")
    return out
