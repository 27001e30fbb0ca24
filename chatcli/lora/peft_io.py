"""PEFT's LoRA format, read and written: ``adapter_config.json`` + ``adapter_model.safetensors``.

An adapter is a directory holding both files, or a ``.safetensors`` file with its
config beside it (``adapter_config.json`` in the same folder, or ``<stem>.json``).
The config is parsed by :mod:`chatcli.lora.config` (what is honoured, what
is refused); :func:`plan_adapter` runs every check that needs no model (files are
regular files, the header passes the safetensors library's rules, keys, targets,
ranks; :mod:`chatcli.lora.validate`), :func:`read_adapter` adds the checks against
the model before returning a :class:`LoRAAdapter`, and :func:`write_adapter` writes
the same format so PEFT loads it. A ``SEQ_CLS`` reward model's ``score`` head is read into
``LoRAAdapter.heads``.

Tensor keys map through one table (``PEFT_PREFIX`` + module + suffix)::

    base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight  <->  (model.layers.3.self_attn.q_proj, A)
    base_model.model.lm_head.weight                                  <->  (lm_head, replacement weight)

Module names are the model's own (they mirror Hugging Face's), so the table only
adds PEFT's prefix and part suffixes.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from chatcli.bounded_json import JSONError, loads
from chatcli.hub.safetensors_header import HeaderError, TensorEntry
from chatcli.hub.safetensors_io import open_mapped
from chatcli.regular_file import NotRegularFile, check_regular, read_bytes

from chatcli.lora.config import (  # noqa: F401  (re-exported: the format's public names)
    DEFAULT_TARGETS,
    HEAD_MODULES,
    SAVED_MODULES,
    SEQ_CLS,
    AdapterConfig,
    short_repr,
)
from chatcli.lora.validate import (
    DEFAULT_MAX_RANK,
    PICKLE_SUFFIXES,
    AdapterError,
    ModuleShapes,
    check_against_model,
    check_dtypes,
    check_finite,
    check_lora_shapes,
    check_safetensors,
    max_rank_limit,
    refuse_pickles,
)

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."

# --- the key table ----------------------------------------------------------------------------

# Tensor-name suffix -> (kind, part). "lora" parts belong to a LoRA-wrapped linear layer,
# "saved" parts to a modules_to_save replacement; "refuse" names what chatcli does not run.
KEY_SUFFIXES: dict[str, tuple[str, str]] = {
    ".lora_A.weight": ("lora", "A"),
    ".lora_B.weight": ("lora", "B"),
    ".lora_A.bias": ("refuse", "LoRA bias (lora_bias)"),
    ".lora_B.bias": ("refuse", "LoRA bias (lora_bias)"),
    ".lora_magnitude_vector": ("refuse", "DoRA (use_dora)"),
    ".lora_magnitude_vector.weight": ("refuse", "DoRA (use_dora)"),
    ".lora_embedding_A": ("refuse", "LoRA on embeddings (lora_embedding_A/B); use modules_to_save"),
    ".lora_embedding_B": ("refuse", "LoRA on embeddings (lora_embedding_A/B); use modules_to_save"),
    ".base_layer.weight": ("base", "weight"),
    ".weight": ("saved", "weight"),
    ".bias": ("saved", "bias"),
}
_SUFFIX_ORDER = sorted(KEY_SUFFIXES, key=len, reverse=True)  # longest first: ".lora_A.weight" before ".weight"

def peft_key(module: str, part: str) -> str:
    """Our (module, part) -> PEFT key; part is "A", "B", "weight" or "bias"."""
    suffix = {"A": ".lora_A.weight", "B": ".lora_B.weight", "weight": ".weight", "bias": ".bias"}[part]
    return PEFT_PREFIX + module + suffix


def parse_key(key: str, source: str) -> tuple[str, str, str]:
    """PEFT key -> (kind "lora" | "saved" | "base", module, part). Raises for keys chatcli cannot use.

    "base" is a copy of the base model's own lm_head / embed_tokens that PEFT saves
    beside an adapter targeting them (``save_embedding_layers``)."""
    if not key.startswith(PEFT_PREFIX):
        raise AdapterError(f"{source}: tensor {key!r} is not a PEFT adapter key (they start with {PEFT_PREFIX!r})")
    rest = key[len(PEFT_PREFIX):]
    for suffix in _SUFFIX_ORDER:
        if rest.endswith(suffix) and len(rest) > len(suffix):
            kind, part = KEY_SUFFIXES[suffix]
            module = rest[: -len(suffix)]
            if kind == "refuse":
                raise AdapterError(f"{source}: tensor {key!r} is {part}, which chatcli does not support")
            if kind == "saved" and module in HEAD_MODULES:
                return "head", module, part
            if kind in ("saved", "base") and module not in SAVED_MODULES.values():
                break  # a plain weight of some other module: reported below
            return kind, module, part
    raise AdapterError(f"{source}: tensor {key!r} is not a LoRA tensor of any module chatcli knows")


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
        )


# --- files ------------------------------------------------------------------------------------


def adapter_files(path: str | Path) -> tuple[Path, Path]:
    """(config file, weights file) of an adapter directory or ``.safetensors`` file, both regular files."""
    p = Path(path).expanduser()
    if not os.path.lexists(p):
        raise AdapterError(f"adapter {p} does not exist: check the path (or the name, see 'chatcli lora info')")
    if p.is_dir():
        weights = p / WEIGHTS_NAME
        if not os.path.lexists(weights):
            others = sorted(x.name for x in p.glob("*.safetensors"))
            if len(others) == 1:
                weights = p / others[0]
            else:
                refuse_pickles(p)
                raise AdapterError(f"no {WEIGHTS_NAME} in {p}: an adapter folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
        config = p / CONFIG_NAME
        if not os.path.lexists(config):
            raise AdapterError(f"no {CONFIG_NAME} in {p}: the adapter needs PEFT's config (r, lora_alpha, target_modules)")
        return _regular(config, "adapter config"), _regular(weights, "adapter weights")
    if p.suffix in PICKLE_SUFFIXES:
        raise AdapterError(
            f"{p.name} is a pickle file: it is never unpickled (that can run arbitrary code); "
            "save the adapter as safetensors"
        )
    if p.suffix != ".safetensors":
        raise AdapterError(f"{p} is not an adapter: point at a folder with {CONFIG_NAME} or a .safetensors file")
    for config in (p.parent / CONFIG_NAME, p.with_suffix(".json")):
        if os.path.lexists(config):
            return _regular(config, "adapter config"), _regular(p, "adapter weights")
    raise AdapterError(f"no {CONFIG_NAME} beside {p.name}: put PEFT's config next to the weights")


def _regular(path: Path, what: str) -> Path:
    """``path`` if it is a regular file; a FIFO, device or directory is refused, never opened blocking."""
    try:
        check_regular(path, what)
    except NotRegularFile as e:
        raise AdapterError(e.message) from None
    except OSError as e:
        raise AdapterError(f"cannot read {what} {path}: {e.strerror or e}") from None
    return path


def read_config(path: Path) -> AdapterConfig:
    """The checked :class:`AdapterConfig` of an ``adapter_config.json`` (regular file, bounded JSON)."""
    try:
        d = loads(read_bytes(path, "adapter config"))
    except NotRegularFile as e:
        raise AdapterError(e.message) from None
    except (OSError, JSONError) as e:
        reason = e.strerror or e if isinstance(e, OSError) else e
        raise AdapterError(f"cannot read {path}: {reason}; the adapter config is broken") from None
    if not isinstance(d, dict):
        raise AdapterError(f"{path} is not a JSON object: the adapter config is broken")
    return AdapterConfig.from_dict(d, source=str(path))


@dataclass(frozen=True)
class AdapterPlan:
    """An adapter's files checked without a model: its config and its tensors grouped by module.

    :func:`plan_adapter` makes it; everything a loader would refuse that does not depend
    on the model is refused there, so ``lora info`` and the pre-flight of ``--lora``
    refuse exactly what loading refuses, before any model is read.
    """

    config_path: Path
    weights: Path
    config: AdapterConfig
    entries: dict[str, TensorEntry]
    lora_keys: dict[str, dict[str, str]]  # module -> "A"/"B" -> key
    saved_keys: dict[str, dict[str, str]]  # module -> "weight"/"bias" -> key (modules_to_save)
    base_keys: dict[str, str]  # module -> key of a saved copy of the base weight
    head_keys: dict[str, str]  # SEQ_CLS head -> key
    deadline: float  # the end of this adapter's regex budget (chatcli.lora.patterns)

    @property
    def source(self) -> str:
        return str(self.weights)


def plan_adapter(path: str | Path, *, max_rank: int | None = None) -> AdapterPlan:
    """Every check of an adapter that needs no model (files, config, header, keys, targets, ranks)."""
    config_path, weights = adapter_files(path)
    source = str(weights)
    config = read_config(config_path)
    entries = check_safetensors(weights)
    check_dtypes(entries, source)

    lora_keys: dict[str, dict[str, str]] = {}
    saved_keys: dict[str, dict[str, str]] = {}
    base_keys: dict[str, str] = {}
    head_keys: dict[str, str] = {}
    listed = {SAVED_MODULES[m] for m in config.modules_to_save}
    for key in entries:
        kind, module, part = parse_key(key, source)
        if kind == "head":
            if module not in config.heads or part != "weight":
                raise AdapterError(
                    f"{source}: tensor {key!r} is a classification head, but adapter_config.json is not a SEQ_CLS "
                    "adapter listing it in modules_to_save"
                )
            head_keys[module] = key
        elif kind == "base" or (kind == "saved" and module not in listed and part == "weight"):
            base_keys[module] = key  # a copy of the base weight, not a replacement
        else:
            (lora_keys if kind == "lora" else saved_keys).setdefault(module, {})[part] = key
    if not lora_keys and not saved_keys:
        raise AdapterError(f"{source} holds no LoRA tensors: it is not an adapter")
    for module, parts in lora_keys.items():
        if set(parts) != {"A", "B"}:
            missing = "lora_B" if "A" in parts else "lora_A"
            raise AdapterError(f"{source}: {module} has no {missing}.weight; the adapter is incomplete")
    for m, p in saved_keys.items():
        if "weight" not in p:
            raise AdapterError(f"{source}: {p['bias']} has no matching weight")

    matcher = config.matcher(source)
    untargeted = [m for m in lora_keys if not matcher.targets(m)]
    if untargeted and len(untargeted) == len(lora_keys):
        raise AdapterError(
            f"{source}: target_modules {short_repr(config.target_modules)} selects none of the {len(lora_keys)} modules "
            "the file has tensors for (PEFT refuses it: target modules not found)"
        )
    if untargeted:
        raise AdapterError(
            f"{source}: has tensors for {untargeted[0]}, which adapter_config.json does not target "
            "(check target_modules, layers_to_transform, exclude_modules)"
        )
    ranks = {m: (entries[p["A"]].shape, entries[p["B"]].shape, matcher.rank_alpha(m)[0]) for m, p in lora_keys.items()}
    check_lora_shapes(ranks, source, max_rank_limit() if max_rank is None else max_rank)
    if set(saved_keys) - listed:
        extra = sorted(set(saved_keys) - listed)[0]
        raise AdapterError(f"{source}: replaces {extra} but adapter_config.json does not list it in modules_to_save")
    missing_heads = sorted(set(config.heads) - set(head_keys))
    if missing_heads:
        raise AdapterError(f"{source}: modules_to_save lists {missing_heads[0]} but the file has no {peft_key(missing_heads[0], 'weight')}")
    for m, key in head_keys.items():
        if len(entries[key].shape) != 2:
            raise AdapterError(f"{source}: head {m} has shape {tuple(entries[key].shape)}; expected [labels, hidden]")
    if listed - set(saved_keys):
        missing = sorted(listed - set(saved_keys))[0]
        raise AdapterError(f"{source}: modules_to_save lists {missing} but the file has no {peft_key(missing, 'weight')}")
    try:  # the library itself must accept the file too (the header check mirrors it; this proves it)
        with open_mapped(weights, checked=True) as f:
            f.keys()
    except HeaderError as e:
        raise AdapterError(f"{source} is not a valid safetensors file ({e}): re-save or re-download the adapter") from None
    return AdapterPlan(config_path, weights, config, entries, lora_keys, saved_keys, base_keys, head_keys, matcher.deadline)


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
        source=str(Path(path).expanduser()),
    )


def write_adapter(adapter: LoRAAdapter, out_dir: str | Path) -> Path:
    """Write ``adapter`` in PEFT's format to ``out_dir`` (created); returns the folder."""
    from safetensors.torch import save_file

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
