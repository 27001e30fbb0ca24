"""Strict checks on an adapter before it touches the model; every failure is one line.

Three layers, each run before the next and all before any module is wrapped:

* files: :func:`check_contained` (a name must not escape its folder through ``..``
  or a symlink), :func:`refuse_pickles` (``.bin``/``.pt`` are refused, never
  unpickled);
* the safetensors container, from its header alone (:func:`check_safetensors`, through
  :mod:`chatcli.hub.safetensors_header`): every rule the safetensors library applies
  (header size, JSON types, dtypes, offsets contiguous and inside the file, shape ×
  dtype = byte span) and a few more (no key twice, bounded nesting); a FIFO or device
  in place of the file is refused, never waited on;
* the tensors' shapes on their own (:func:`check_lora_shapes`): matrices, zero-size
  tensors, ``r`` in the config ≠ the tensor's rank, a rank above the cap; then
  against the model (:func:`check_against_model`): keys that name no module, shapes
  of another base (the first mismatch named with both shapes); and their values
  (:func:`check_finite`): NaN/Inf.

All raise :class:`AdapterError` (a :class:`ModelError`) whose message names the
adapter file and what to do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from chatcli.errors import ModelError
from chatcli.hub.safetensors_header import HeaderError, TensorEntry, parse_header
from chatcli.regular_file import NotRegularFile

DEFAULT_MAX_RANK = 512  # far above any useful LoRA rank; a bigger one is a full matrix in disguise
MAX_RANK_ENV = "CHATCLI_MAX_LORA_RANK"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

# The float types an adapter's tensors may have (every other known dtype is refused by name).
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")


class AdapterError(ModelError):
    """An adapter that cannot be loaded; the model is unchanged."""


# --- files ------------------------------------------------------------------------------------


def max_rank_limit() -> int:
    """The rank cap: ``$CHATCLI_MAX_LORA_RANK`` when set to a positive integer, else the default."""
    value = os.environ.get(MAX_RANK_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_RANK
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:
        raise AdapterError(f"{MAX_RANK_ENV}={value!r} is not a positive integer: fix or unset it")
    return limit


def check_contained(path: Path, root: Path, what: str = "adapter") -> Path:
    """``path`` resolved (symlinks followed); refused if it lies outside ``root``."""
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    if real != real_root and real_root not in real.parents:
        raise AdapterError(
            f"{what} {path} resolves to {real}, outside {real_root}: names may not escape their folder "
            "(through '..' or a symlink); pass an explicit path instead"
        )
    return real


def refuse_pickles(folder: Path) -> None:
    """Called when a folder has no safetensors weights: name the pickle files it has instead."""
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []
    if pickles:
        raise AdapterError(
            f"{folder} has only pickle weights ({', '.join(pickles[:3])}): they are never unpickled "
            "(that can run arbitrary code); save the adapter as adapter_model.safetensors "
            "(PEFT: save_pretrained(..., safe_serialization=True))"
        )


# --- the safetensors container ----------------------------------------------------------------


def check_safetensors(path: Path) -> dict[str, TensorEntry]:
    """Parse and check the header of ``path`` as strictly as the safetensors library does
    (:func:`~chatcli.hub.safetensors_header.parse_header`); its tensors by name, file order kept."""
    try:
        return parse_header(path, what="adapter weights").tensors
    except OSError as e:
        raise AdapterError(f"cannot read adapter file {path}: {e.strerror or e}") from None
    except NotRegularFile as e:
        raise AdapterError(e.message) from None
    except HeaderError as e:
        raise AdapterError(f"{path} is not a valid safetensors file ({e}): re-save or re-download the adapter") from None


def check_dtypes(entries: Mapping[str, TensorEntry], source: str) -> None:
    for e in entries.values():
        if e.dtype not in FLOAT_DTYPES:
            raise AdapterError(f"{source}: tensor {e.name!r} is {e.dtype}, not a float type; LoRA weights must be F32/F16/BF16")


# --- tensors against the model ----------------------------------------------------------------


@dataclass(frozen=True)
class ModuleShapes:
    """What the model offers an adapter: linear layers as (out, in), replaceable weights' shapes."""

    linears: Mapping[str, tuple[int, int]]  # "model.layers.0.self_attn.q_proj" -> (out, in)
    replaceable: Mapping[str, tuple[int, ...]]  # "lm_head" / "model.embed_tokens" -> weight shape


def check_lora_shapes(
    lora: Mapping[str, tuple[tuple[int, ...], tuple[int, ...], int]], source: str, max_rank: int = DEFAULT_MAX_RANK
) -> None:
    """What the file alone must get right: ``lora`` maps module -> (A shape, B shape, r from the config).

    Matrices, none empty, lora_A and lora_B of one rank, that rank the config's and within the cap.
    """
    for module, (a_shape, b_shape, _) in lora.items():
        for part, shape in (("lora_A", a_shape), ("lora_B", b_shape)):
            if len(shape) != 2:
                raise AdapterError(f"{source}: {module}.{part} has shape {list(shape)}, LoRA tensors are matrices")
            if 0 in shape:
                raise AdapterError(f"{source}: {module}.{part} is empty (shape {list(shape)}): the adapter is broken")
    for module, (a_shape, b_shape, r) in lora.items():
        rank = a_shape[0]
        if b_shape[1] != rank:
            raise AdapterError(f"{source}: {module} has lora_A rank {rank} but lora_B rank {b_shape[1]}")
        if rank != r:
            raise AdapterError(
                f"{source}: {module} has rank {rank} but adapter_config.json says r={r} "
                "(check r and rank_pattern)"
            )
        if rank > max_rank:
            raise AdapterError(
                f"{source}: {module} has rank {rank}, above the limit of {max_rank}; set {MAX_RANK_ENV} higher to load it"
            )


def check_against_model(
    lora: Mapping[str, tuple[tuple[int, ...], tuple[int, ...], int]],
    saved: Mapping[str, tuple[tuple[int, ...], str]],
    model: ModuleShapes,
    source: str,
    max_rank: int = DEFAULT_MAX_RANK,
) -> None:
    """Check each module's tensors before any is read.

    ``lora``: module -> (A shape, B shape, r from the config); ``saved``: module ->
    (replacement weight shape, file key). Raises on the first problem, in file order.
    """
    check_lora_shapes(lora, source, max_rank)
    unknown = [m for m in lora if m not in model.linears]
    if unknown:
        more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
        raise AdapterError(
            f"{source}: tensors for {unknown[0]}{more} match no linear layer of this model: "
            "the adapter was trained for another base model"
        )
    for module, (a_shape, b_shape, _) in lora.items():
        out_f, in_f = model.linears[module]
        if a_shape[1] != in_f or b_shape[0] != out_f:
            bad_part, got, want = (
                ("lora_A", a_shape, (a_shape[0], in_f)) if a_shape[1] != in_f else ("lora_B", b_shape, (out_f, b_shape[1]))
            )
            raise AdapterError(
                f"{source}: {module}.{bad_part} has shape {list(got)} but this model needs {list(want)}: "
                "the adapter was trained for another base model"
            )
    for module, (shape, key) in saved.items():
        want = model.replaceable.get(module)
        if want is None:
            raise AdapterError(f"{source}: {key} replaces {module}, which this model does not have")
        if 0 in shape:
            raise AdapterError(f"{source}: {key} is empty (shape {list(shape)})")
        if tuple(shape) != tuple(want):
            raise AdapterError(
                f"{source}: {key} has shape {list(shape)} but this model's {module} is {list(want)}: "
                "the adapter was trained for another base model"
            )


def check_finite(tensors: Mapping[str, torch.Tensor], source: str) -> None:
    # Fast screen: a NaN or Inf anywhere makes that tensor's float32 sum non-finite (a finite
    # tensor's sum could only overflow above 3e38, and that false alarm is cleared below).
    # Hundreds of isfinite() calls cost ~10x more on a model with hundreds of layers.
    sums = torch.stack([t.sum(dtype=torch.float32) for t in tensors.values()]) if tensors else None
    if sums is None or bool(torch.isfinite(sums).all()):
        return
    for key, t in tensors.items():
        if not bool(torch.isfinite(t).all()):
            n = int((~torch.isfinite(t)).sum())
            raise AdapterError(f"{source}: tensor {key!r} has {n} NaN/Inf value(s): the adapter is broken, retrain or re-download it")
