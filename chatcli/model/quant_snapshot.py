"""A quantised model's built state as plain byte blobs and back, so a later load need not quantise again.

:func:`describe` turns a model :func:`~chatcli.model.quantize.quantize_model` built (then cast and
packed) into ``(blobs, layout)``: ``blobs`` are 1-D uint8 tensors, ``layout`` a JSON-able dict.
The quantised layers' buffers are stored as the allocations they are views of (the two that
quantising makes for all layers: bytes and bfloat16 scales), each buffer recorded by its place in
one (byte offset, shape, strides, dtype); every other tensor of the state (norms, biases, a float
embedding) as its own blob. :func:`rebuild` gives a meta-device model from
:func:`~chatcli.hub.checkpoint.meta_model` the same quantised layers with views of the blobs at the
same places: packing then finds the fused groups' members laid out as before and copies nothing,
and every buffer and every logit equals the original's bit for bit (tests/hub/test_quant_cache.py).

Only the layer kinds named in :data:`KINDS` are known; a model holding any other quantised layer is
not described (None), and a layout that does not fit the model raises ``ValueError`` (the caller
then builds the model from the checkpoint).
"""

from __future__ import annotations

import torch
from torch import nn

from chatcli.model.int4 import Int4Linear, packing
from chatcli.model.int8 import Int8Linear
from chatcli.model.int8_embedding import Int8Embedding
from chatcli.model.qlinear import QuantizedEmbedding, QuantizedLinear

KINDS = ("int4", "int8", "int8-embedding")
LAYOUT = 1  # bump when what describe records or quantising builds changes: older cache files then miss
_DTYPES = {str(d): d for d in (torch.float32, torch.bfloat16, torch.float16, torch.uint8, torch.int8)}


def snapshot_tag() -> str:
    """What a cached build depends on beyond the checkpoint and the quantisation: :data:`LAYOUT` and the
    int4 kernel's row order on this CPU build (:func:`~chatcli.model.int4.packing`)."""
    return f"snapshot{LAYOUT}/{packing()}"


def describe(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict] | None:
    """``(blobs, layout)`` of a built quantised CPU model, or None when it holds something unknown here."""
    names = {id(m): n for n, m in model.named_modules()}
    modules: dict[str, list] = {}
    shared: set[int] = set()  # storages of quantised buffers: kept whole, buffers as places in them
    for name, m in model.named_modules():
        if type(m) is Int4Linear:
            modules[name] = ["int4", str(m.compute_dtype), m.in_features, m.out_features, m.group_size]
        elif type(m) is Int8Linear:
            modules[name] = ["int8", str(m.compute_dtype), m.exact_top]
        elif type(m) is Int8Embedding:
            modules[name] = ["int8-embedding", names.get(id(m.head))]
        elif isinstance(m, (QuantizedLinear, QuantizedEmbedding)):
            return None
        else:
            continue
        shared.update(b.untyped_storage().data_ptr() for b in m.buffers(recurse=False))
    if not modules:
        return None
    blobs: dict[str, torch.Tensor] = {}
    by_storage: dict[tuple, str] = {}
    tensors: dict[str, list] = {}
    for key, t in model.state_dict(keep_vars=True).items():
        t = t.detach()
        if t.device.type != "cpu" or str(t.dtype) not in _DTYPES:
            return None
        ptr = t.untyped_storage().data_ptr()
        if ptr in shared:  # a view of a whole allocation, kept whole
            blob_id, offset, stride = (ptr,), t.storage_offset() * t.element_size(), list(t.stride())
            if blob_id not in by_storage:
                by_storage[blob_id] = _name(blobs, torch.empty(0, dtype=torch.uint8).set_(t.untyped_storage()))
        else:  # its own blob (one per distinct tensor: a tied weight is stored once)
            blob_id, offset, stride = (ptr, t.storage_offset(), tuple(t.shape), t.stride()), 0, None
            if blob_id not in by_storage:
                by_storage[blob_id] = _name(blobs, t.contiguous().reshape(-1).view(torch.uint8))
        tensors[key] = [by_storage[blob_id], offset, list(t.shape), stride, str(t.dtype)]
    return blobs, {"modules": modules, "tensors": tensors}


def _name(blobs: dict[str, torch.Tensor], blob: torch.Tensor) -> str:
    name = f"b{len(blobs)}"
    blobs[name] = blob
    return name


def rebuild(model: nn.Module, layout: dict, blobs: dict[str, torch.Tensor]) -> None:
    """Give the meta-device ``model`` the quantised layers and tensors ``layout`` records, as views of
    ``blobs`` (checked: ``ValueError`` when anything does not fit; the model is then unusable)."""
    try:
        tensors = {key: _tensor(blobs, *entry) for key, entry in layout["tensors"].items()}
        modules = dict(model.named_modules())
        specs = sorted(layout["modules"].items(), key=lambda item: item[1][0] == "int8-embedding")
        for name, spec in specs:  # the embedding reads a head built before it
            parent_name, _, attr = name.rpartition(".")
            old = modules[name]
            new = _layer(spec, name, tensors, modules, type(old))
            modules[parent_name].register_module(attr, new)
            modules[name] = new
    except (KeyError, IndexError, TypeError, RuntimeError) as e:
        raise ValueError(f"the cached layout does not fit the model: {e}") from None
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"the cached layout does not fit the model: {unexpected or missing}")
    if type(getattr(model, "lm_head", None)) is nn.Linear:
        model.tie_weights()  # a float head tied to the embedding shares its Parameter again


def _layer(spec: list, name: str, tensors: dict[str, torch.Tensor], modules: dict[str, nn.Module],
           was: type) -> nn.Module:
    kind = spec[0]
    if kind == "int8-embedding":
        if not issubclass(was, nn.Embedding):
            raise TypeError(f"{name} is not an embedding")
        return Int8Embedding(modules[spec[1]])
    if not issubclass(was, nn.Linear):
        raise TypeError(f"{name} is not a linear layer")
    dtype, bias = _DTYPES[spec[1]], tensors.get(f"{name}.bias")
    if kind == "int4":
        _, _, k, n, group = spec
        return Int4Linear(tensors[f"{name}.qweight"], tensors[f"{name}.scales_zeros"], bias, dtype, k, n, group)
    if kind == "int8":
        layer = Int8Linear(tensors[f"{name}.qweight"], tensors[f"{name}.scales"], bias, dtype)
        layer.exact_top = int(spec[2])
        return layer
    raise TypeError(f"unknown layer kind {kind!r}")


def _tensor(blobs: dict[str, torch.Tensor], blob: str, offset: int, shape: list[int], stride: list[int] | None,
            dtype: str) -> torch.Tensor:
    typed = blobs[blob].view(_DTYPES[dtype])
    size = typed.element_size()
    if offset % size:
        raise RuntimeError(f"misaligned tensor in {blob}")
    if stride is None:  # its own blob, contiguous (and padded at its end in the file)
        n = 1
        for d in shape:
            n *= d
        return typed[:n].view(shape)
    return typed.as_strided(shape, stride, offset // size)
