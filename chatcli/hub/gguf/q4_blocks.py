"""GGUF Q4_0 / Q4_1 weights as they are stored, for ``--quantize int4`` to load without re-quantising.

A model chatcli converted from a GGUF keeps the file (``source.gguf``, see
:mod:`chatcli.hub.gguf.importer`). :func:`q4_blocks` opens it (memory-mapped) and returns a
mapping from HF weight names to :class:`~chatcli.model.int4.Q4Blocks`, read one tensor at a
time when asked for (peak memory: one unpacked tensor). Only Q4_0 and Q4_1 tensors are in it;
every other weight (the Q8_0 embedding of the default model, F16 layers) is absent, and the
caller quantises those from the float weights as usual.

A block of 32 inputs is ``d`` (float16), for Q4_1 ``m`` (float16), then 16 bytes whose low
nibbles are inputs 0..15 and high nibbles inputs 16..31 (gguf-py's ``dequantize`` reads them
the same way): ``w = d * q + m`` (Q4_1) or ``w = d * (q - 8)`` (Q4_0). llama.cpp's converter
permuted the rows of q/k for its rotary kernel; whole rows move, so the 4-bit values, d and m
are unpermuted together exactly as the importer unpermutes the float weights.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch

from chatcli.errors import ChatcliError, ModelError
from chatcli.hub.gguf.importer import INT4_TYPES, open_gguf, read_metadata
from chatcli.hub.gguf.llama import TensorPlan, llama_shape, plan_tensors, unpermute_rotary
from chatcli.hub.manifest import read_manifest
from chatcli.model.int4 import Q4Blocks

BLOCK = 32
_BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20}


def kept_gguf(model_dir: Path) -> Path | None:
    """The GGUF a chatcli conversion kept in ``model_dir`` (None for any other model)."""
    source = (read_manifest(Path(model_dir)) or {}).get("source")
    kept = source.get("kept") if isinstance(source, dict) else None
    if not isinstance(kept, str) or "/" in kept or "\\" in kept:
        return None
    path = Path(model_dir) / kept
    return path if path.is_file() else None


class Q4Weights(Mapping):
    """HF weight name -> Q4Blocks of one GGUF file's Q4_0/Q4_1 tensors (read on access)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        reader = open_gguf(self.path)
        try:
            shape = llama_shape(read_metadata(reader), reader.tensors)
            plan = plan_tensors(reader.tensors, shape)
        except ChatcliError:
            raise
        except Exception as e:  # the file is data: anything odd in it is one line
            raise ModelError(f"{self.path.name}: unusable tensor table ({type(e).__name__}); "
                             "re-download the model") from None
        self._items: dict[str, TensorPlan] = {i.hf_name: i for i in plan if i.tensor.tensor_type.name in INT4_TYPES}

    def __getitem__(self, name: str):
        item = self._items[name]
        kind = item.tensor.tensor_type.name
        n, k = item.shape
        try:
            raw = np.asarray(item.tensor.data, dtype=np.uint8).reshape(n, k // BLOCK, _BLOCK_BYTES[kind])
        except ValueError:
            raise ModelError(f"{self.path.name}: tensor {item.tensor.name} has the wrong size; "
                             "re-download the model") from None
        d = raw[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)  # [N, G]
        m = raw[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32) if kind == "Q4_1" else None
        qs = raw[..., 4:] if kind == "Q4_1" else raw[..., 2:]  # [N, G, 16]
        q = np.concatenate([qs & 15, qs >> 4], axis=2).reshape(n, k)  # inputs 0..15, then 16..31 of each block
        if item.heads is not None:  # whole rows move: values, d and m together
            q, d = unpermute_rotary(q, item.heads), unpermute_rotary(d, item.heads)
            m = None if m is None else unpermute_rotary(m, item.heads)
        return Q4Blocks(_tensor(q), _tensor(d), None if m is None else _tensor(m))

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def q4_blocks(model_dir: Path) -> Q4Weights | None:
    """The kept GGUF's Q4 weights of a converted model, or None when it has none."""
    path = kept_gguf(model_dir)
    if path is None:
        return None
    weights = Q4Weights(path)
    return weights if len(weights) else None
