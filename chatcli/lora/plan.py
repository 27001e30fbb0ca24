"""An adapter's files checked without a model: the folder's two files, the config, the plan.

:func:`adapter_files` finds ``adapter_config.json`` and the weights (a folder, or a
``.safetensors`` file with its config beside it) and refuses anything but regular files
(a FIFO or device is refused, never opened blocking); :func:`read_config` parses the
config (bounded JSON, every field type-checked by :mod:`chatcli.lora.config`);
:func:`plan_adapter` runs every check loading makes that needs no model, so ``lora
info`` and the ``--lora`` pre-flight refuse exactly what loading refuses, before a
model is read: the header passes the safetensors library's rules, every key is a PEFT
LoRA key, the config targets every module the file has tensors for (all regexes under
one time budget), ranks agree, modules_to_save and heads are consistent, and the
library itself opens the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from chatcli.bounded_json import JSONError, loads
from chatcli.hub.safetensors_header import HeaderError, TensorEntry
from chatcli.hub.safetensors_io import open_mapped
from chatcli.lora.config import SAVED_MODULES, AdapterConfig, short_repr
from chatcli.lora.peft_keys import parse_key, peft_key
from chatcli.lora.validate import (
    PICKLE_SUFFIXES,
    AdapterError,
    check_dtypes,
    check_finite,
    check_lora_shapes,
    check_safetensors,
    max_rank_limit,
    refuse_pickles,
)
from chatcli.regular_file import NotRegularFile, check_regular, read_bytes

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"


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


def plan_adapter(path: str | Path, *, max_rank: int | None = None, values: bool = False) -> AdapterPlan:
    """Every check of an adapter that needs no model (files, config, header, keys, targets, ranks);
    ``values`` also reads the tensors and refuses NaN/Inf (what :func:`read_adapter` does after)."""
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
            tensors = {key: f.get_tensor(key) for key in entries} if values else {}
    except HeaderError as e:
        raise AdapterError(f"{source} is not a valid safetensors file ({e}): re-save or re-download the adapter") from None
    check_finite(tensors, source)
    return AdapterPlan(config_path, weights, config, entries, lora_keys, saved_keys, base_keys, head_keys, matcher.deadline)
