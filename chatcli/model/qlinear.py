"""What every quantised linear layer answers, so LoRA, probes and the loaders treat int8 and int4 alike.

:class:`QuantizedLinear` is the common base of :class:`~chatcli.model.int8.Int8Linear` and
:class:`~chatcli.model.int4.Int4Linear`: a frozen layer that answers like the ``nn.Linear`` it
replaced (``in_features``, ``out_features``, ``bias``, ``forward``), computes in a float
``dtype`` and gives its weight back as floats on request (:meth:`dequantize`, and ``weight``
for reading: writing to that copy changes nothing, which is why merging a LoRA adapter into
a quantised layer and training its weights are refused). :class:`QuantizedEmbedding` makes the
same promise for a token lookup whose table is quantised (a tied model's embedding read from
its int8 head, :mod:`chatcli.model.int8_embedding`). The helpers below read a layer's float
dtype, device and shape without dequantising it (reading ``weight`` would: for the default
model's 49k-token table that is a 113 MB temporary).
"""

from __future__ import annotations

import torch
from torch import nn


class QuantizedLinear(nn.Module):
    """Base of the quantised linear layers; subclasses hold the integer weights and compute."""

    method = "quantized"  # "int8", "int4": the --quantize name, for messages
    in_features: int
    out_features: int
    compute_dtype: torch.dtype

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype

    @property
    def device(self) -> torch.device:  # pragma: no cover - every subclass answers
        raise NotImplementedError

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:  # pragma: no cover
        """The weight the layer computes with, [out, in] in ``dtype`` (default: the compute dtype)."""
        raise NotImplementedError

    def matches(self, weight: torch.Tensor) -> bool:  # pragma: no cover
        """Whether quantising the float ``weight`` [out, in] gives this layer (an adapter's saved
        copy of its base checks the base is the one it was made for)."""
        raise NotImplementedError

    @property
    def weight(self) -> torch.Tensor:
        return self.dequantize()


class QuantizedEmbedding(nn.Module):
    """Base of token lookups whose table is held quantised: ``forward(ids [...]) -> [..., D]``
    in the float ``dtype``; ``weight`` [V, D] is a dequantised copy, for reading."""

    method = "quantized"
    num_embeddings: int
    embedding_dim: int

    @property
    def dtype(self) -> torch.dtype:  # pragma: no cover - every subclass answers
        raise NotImplementedError

    @property
    def device(self) -> torch.device:  # pragma: no cover
        raise NotImplementedError

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:  # pragma: no cover
        """The table the lookup reads, [V, D] in ``dtype`` (default: the compute dtype)."""
        raise NotImplementedError

    def matches(self, weight: torch.Tensor) -> bool:  # pragma: no cover
        """Whether quantising the float table ``weight`` [V, D] gives this lookup's table."""
        raise NotImplementedError

    @property
    def weight(self) -> torch.Tensor:
        return self.dequantize()


# What holds quantised weights: isinstance checks that must not read ``weight`` use this.
QUANTIZED_MODULES = (QuantizedLinear, QuantizedEmbedding)


def float_dtype_device(layer: nn.Module) -> tuple[torch.dtype, torch.device]:
    """The float dtype a layer computes in, and its device: a quantised layer's compute dtype
    (reading its ``weight`` would dequantise it), else its weight's. A wrapper (LoRA's) answers
    for the module it wraps (its ``base``)."""
    base = getattr(layer, "base", None)
    if isinstance(base, nn.Module):
        return float_dtype_device(base)
    if isinstance(layer, QUANTIZED_MODULES):
        return layer.dtype, layer.device
    return layer.weight.dtype, layer.weight.device


def weight_shape(layer: nn.Module) -> tuple[int, ...]:
    """The shape of a layer's (float or quantised) weight, without dequantising it."""
    if isinstance(layer, QuantizedLinear):
        return (layer.out_features, layer.in_features)
    if isinstance(layer, QuantizedEmbedding):
        return (layer.num_embeddings, layer.embedding_dim)
    return tuple(layer.weight.shape)


def quantization(model: nn.Module) -> str | None:
    """The method of the first quantised layer of ``model`` ("int8", "int4"), or None."""
    return next((m.method for m in model.modules() if isinstance(m, QuantizedLinear)), None)


def is_quantized(model: nn.Module) -> bool:
    """Whether any layer of ``model`` holds quantised weights."""
    return quantization(model) is not None
