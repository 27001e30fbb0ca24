"""A tied model's token lookup read from its int8 LM head: no float copy of the embedding.

A model with tied embeddings (SmolLM2, most small models) has one ``[V, D]`` matrix for the
lookup and the LM head. Quantisation gives the head its own int8 copy
(:class:`~chatcli.model.int8.Int8Linear`: ``Q [V, D]`` int8 and a bfloat16 scale ``s`` per row);
kept float, the lookup table would then be the largest tensor of a quantised model (113 MB
for the default model in float32, more than all its int4 projections). :class:`Int8Embedding`
looks rows up in the head's own buffers instead::

    embed(i) = Q[i] * s[i]        (computed in float32, exact, then cast to the model dtype)

which are exactly the values the head multiplies by (``head.dequantize()[i]``, bit for bit),
so the lookup costs no memory of its own. The error against the float table is the int8
head's: at most ``s_i / 2`` per value (0.4 % of the row's largest); what that does to the
default model's answers is measured in benchmarks/PERFLOG.md (``benchmarks/quant_quality.py``).

The head is held as a plain reference, not a child module: its buffers stay named
``lm_head.*`` only (LoRA, the state dict, ``named_modules`` see one head), and moving the
model moves them once, the lookup reading whatever the head holds at each call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from chatcli.model.int8 import Int8Linear
from chatcli.model.qlinear import QuantizedEmbedding


class Int8Embedding(QuantizedEmbedding):
    """``ids [...] -> [..., D]``: rows of an :class:`Int8Linear` head's int8 weights times their scales."""

    method = "int8"

    def __init__(self, head: Int8Linear):
        super().__init__()
        if not isinstance(head, Int8Linear):
            raise TypeError(f"Int8Embedding reads an Int8Linear head, got {type(head).__name__}")
        self.__dict__["head"] = head  # not registered: see the module docstring
        self.num_embeddings, self.embedding_dim = head.out_features, head.in_features

    @property
    def dtype(self) -> torch.dtype:
        return self.head.compute_dtype

    @property
    def device(self) -> torch.device:
        return self.head.device

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        head = self.head
        rows = F.embedding(ids, head.qweight)  # [..., D] int8: only the rows asked for are read
        scales = F.embedding(ids, head.scales[:, None])  # [..., 1] bfloat16
        # The same float32 product as Int8Linear.dequantize, so a row equals the head's row exactly.
        return (rows.float() * scales.float()).to(head.compute_dtype)

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return self.head.dequantize(dtype)

    def matches(self, weight: torch.Tensor) -> bool:
        """Same float table quantises to the head's int8 rows and scales (exactly): the head's check."""
        return self.head.matches(weight)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 rows of lm_head"
