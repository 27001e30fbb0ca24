"""The key/value cache: what the model has already computed for the tokens seen so far.

Per layer, keys and values live in ``[B, n_kv_heads, capacity, head_dim]`` tensors.
Positions ``[0, length)`` are filled. Storage grows in ``chunk``-sized steps by
reallocating (sized to what a request needs, never the whole context up front, so
a short chat with a 128k-context model costs kilobytes, not gigabytes).

Protocol with the model (``DecoderLM.forward``): it calls ``ensure(length + S)``,
then each attention layer calls ``update(layer, k, v)``, which writes the S new
positions at ``length`` and returns the filled keys/values including them; after
the last layer the model calls ``advance(S)``. A forward that fails half-way thus
leaves ``length`` unchanged.

Prefix reuse: ``truncate(n)`` keeps the first ``n`` positions. Batched candidates:
``expand(n)`` returns a new cache whose ``n`` rows are copies of a batch-1 cache
(one shared prefill, then ``n`` answers); ``select(row)`` returns one row back.
"""

from __future__ import annotations

import torch

from chatcli.model.config import ModelConfig
from chatcli.errors import GenerationError


class KVCache:
    def __init__(
        self,
        config: ModelConfig,
        batch_size: int,
        dtype: torch.dtype,
        device: torch.device | str,
        capacity: int = 0,
        chunk: int = 256,
    ):
        if batch_size < 1 or chunk < 1 or capacity < 0:
            raise ValueError(f"bad KVCache sizes: batch_size={batch_size} chunk={chunk} capacity={capacity}")
        self.config = config
        self.batch_size = batch_size
        self.dtype = dtype
        self.device = torch.device(device)
        self.chunk = chunk
        self.length = 0
        self._capacity = 0
        self.keys: list[torch.Tensor] = []  # per layer [B, KV, capacity, Dh]
        self.values: list[torch.Tensor] = []
        self._allocate(capacity)

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def bytes_per_token(self) -> int:
        """Memory one position costs across all layers and rows (keys + values)."""
        c = self.config
        elem = torch.empty((), dtype=self.dtype).element_size()
        return 2 * c.num_hidden_layers * self.batch_size * c.num_key_value_heads * c.head_dim * elem

    @property
    def nbytes(self) -> int:
        return self.bytes_per_token * self._capacity

    def ensure(self, total_len: int) -> None:
        """Make room for ``total_len`` positions, growing in whole chunks (capped at the context)."""
        if total_len <= self._capacity:
            return
        limit = self.config.context_length
        if total_len > limit:
            raise GenerationError(
                f"{total_len} tokens exceed the model's context of {limit}: shorten the conversation "
                "or lower max_tokens"
            )
        chunks = -(-total_len // self.chunk)  # ceil
        self._allocate(max(total_len, min(chunks * self.chunk, limit)))

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [B, KV, S, Dh] at ``length``; return the filled keys/values [B, KV, length+S, Dh]."""
        start = self.length
        end = start + k.shape[2]
        if end > self._capacity:
            self.ensure(end)  # callers normally ensure first; this keeps direct use safe
        self.keys[layer_idx][:, :, start:end] = k
        self.values[layer_idx][:, :, start:end] = v
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]

    def advance(self, n: int) -> None:
        """Mark ``n`` more positions as filled (called by the model after all layers wrote them)."""
        if self.length + n > self._capacity:
            raise AssertionError("KVCache.advance past capacity: call ensure() first")
        self.length += n

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` positions (prefix reuse); storage is kept for the next tokens."""
        if not 0 <= n <= self.length:
            raise ValueError(f"cannot truncate a cache of length {self.length} to {n}")
        self.length = n

    def reset(self) -> None:
        self.length = 0

    def expand(self, n: int) -> "KVCache":
        """A new cache of ``n`` rows, each a copy of this batch-1 cache (this one is left as is)."""
        if self.batch_size != 1:
            raise ValueError(f"expand needs a batch-1 cache, this one has {self.batch_size} rows")
        return self._derive(n, lambda t: t.expand(n, -1, -1, -1))

    def select(self, row: int) -> "KVCache":
        """A new batch-1 cache holding a copy of row ``row`` (e.g. the candidate the person kept)."""
        if not 0 <= row < self.batch_size:
            raise IndexError(f"row {row} out of range for a cache of {self.batch_size} rows")
        return self._derive(1, lambda t: t[row : row + 1])

    def clone(self) -> "KVCache":
        return self._derive(self.batch_size, lambda t: t)

    def _derive(self, batch_size: int, rows) -> "KVCache":
        out = KVCache(self.config, batch_size, self.dtype, self.device, capacity=self._capacity, chunk=self.chunk)
        n = self.length
        for dst, src in zip(out.keys + out.values, self.keys + self.values):
            dst[:, :, :n] = rows(src[:, :, :n])
        out.length = n
        return out

    def _allocate(self, capacity: int) -> None:
        """(Re)allocate storage of ``capacity`` positions, keeping the filled part."""
        c = self.config
        shape = (self.batch_size, c.num_key_value_heads, capacity, c.head_dim)
        n = self.length
        new_keys, new_values = [], []
        # Normal (not inference-mode) tensors even when growth happens inside
        # torch.inference_mode(): those may be written in place in any mode, so a cache
        # filled under inference_mode can be continued under no_grad and vice versa.
        with torch.inference_mode(False):
            for i in range(c.num_hidden_layers):
                k = torch.empty(shape, dtype=self.dtype, device=self.device)
                v = torch.empty(shape, dtype=self.dtype, device=self.device)
                if n and self.keys:
                    k[:, :, :n] = self.keys[i][:, :, :n]
                    v[:, :, :n] = self.values[i][:, :, :n]
                new_keys.append(k)
                new_values.append(v)
        self.keys, self.values = new_keys, new_values
        self._capacity = capacity

    def __repr__(self) -> str:
        return (
            f"KVCache(batch={self.batch_size}, length={self.length}, capacity={self._capacity}, "
            f"dtype={self.dtype}, device={self.device})"
        )
