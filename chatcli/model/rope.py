"""Rotary position embeddings, as Hugging Face llama computes them.

``inv_freq(config)`` gives the per-pair frequencies (with ``linear`` or Llama-3
band scaling); ``RotaryEmbedding(positions)`` turns positions into ``cos``/``sin``
tables computed in float32 (the angles of late positions lose precision in
bf16) and cast to the activations' dtype, once per forward for all layers, in the
layout :func:`rotate` broadcasts over (``[B, S, 1, Dh]``, the sign of rotate-half
folded into ``sin``). ``rotate`` applies HF's rotate-half convention (the first and
second halves of the head dim form the pairs, not interleaved neighbours) to any
number of heads at once, so q and k, adjacent in the fused q/k/v output, rotate
in four ops: ``x·cos + swap_halves(x)·sin_signed``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from chatcli.model.config import ModelConfig


def inv_freq(config: ModelConfig, device: torch.device | str | None = None) -> torch.Tensor:
    """Inverse frequencies [head_dim // 2], float32."""
    dim = config.head_dim
    exponents = torch.arange(0, dim, 2, dtype=torch.int64, device=device).float() / dim
    freq = 1.0 / (config.rope_theta**exponents)  # [Dh/2]
    scaling = config.rope_scaling
    if scaling is None:
        return freq
    if scaling.rope_type == "linear":
        return freq / scaling.factor
    # llama3: keep high frequencies, divide low ones by `factor`, blend the band between.
    old_len = scaling.original_max_position_embeddings
    low_freq_wavelen = old_len / scaling.low_freq_factor
    high_freq_wavelen = old_len / scaling.high_freq_factor
    wavelen = 2 * math.pi / freq
    scaled = torch.where(wavelen > low_freq_wavelen, freq / scaling.factor, freq)
    smooth = (old_len / wavelen - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor)
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    """positions [B, S] -> (cos, sin) [B, S, head_dim] in ``dtype``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        # Not persistent: derived from the config, never in a checkpoint. Built on the meta
        # device (checkpoint loading), it is computed on the CPU instead: arithmetic on meta
        # tensors imports torch._dynamo (seconds), and reset_buffers() replaces it anyway.
        device = "cpu" if torch.get_default_device().type == "meta" else None
        self.register_buffer("inv_freq", inv_freq(config, device=device), persistent=False)
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # see table()

    def reset_buffers(self, device: torch.device | str) -> None:
        """Recompute ``inv_freq`` on ``device`` (after building the model on the meta device)."""
        self.inv_freq = inv_freq(self.config, device=device)
        self._tables.clear()

    @torch.no_grad()
    def table(self, n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin_signed) [>= n, 1, Dh] for positions 0, 1, ...: row p is what :meth:`forward`
        gives for position p, bit for bit (the same operations, on a column of positions).
        Kept per dtype (on ``inv_freq``'s device), grown in steps of 256 positions, so a decode
        step reads its row instead of computing it (chatcli.model.decode_step)."""
        f = self.inv_freq  # the key follows it: moved, cast or recomputed, the table is rebuilt
        key = (dtype, f.device, f.dtype, f.data_ptr())
        have = self._tables.get(key)
        if have is not None and have[0].shape[0] >= n:
            return have
        if have is None:
            self._tables.clear()
        size = min(-(-n // 256) * 256, max(n, self.config.context_length))
        positions = torch.arange(size, device=f.device).view(size, 1)  # [N, 1]: N rows of one position
        cos, sin = self.forward(positions, dtype)  # [N, 1, 1, Dh]
        out = (cos.view(size, 1, -1), sin.view(size, 1, -1))
        self._tables[key] = out
        return out

    @torch.no_grad()
    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [B, S] int64 -> (cos, sin_signed) [B, S, 1, Dh] in ``dtype``."""
        angles = positions[..., None, None].float() * self.inv_freq.float()  # [B, S, 1, Dh/2]
        sin = angles.sin()
        # rotate_half(x) = (-x2, x1): the minus goes into the first half of sin (exact in any dtype).
        return torch.cat((angles, angles), dim=-1).cos().to(dtype), torch.cat((-sin, sin), dim=-1).to(dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """x [B, S, N, Dh] (any number of heads N) rotated by the tables [B, S, 1, Dh] of :class:`RotaryEmbedding`."""
    half = x.shape[-1] // 2
    swapped = torch.cat((x[..., half:], x[..., :half]), dim=-1)  # (x2, x1)
    # Not addcmul: its fused multiply-add rounds once where HF rounds twice (parity to the bit).
    return x * cos + swapped * sin_signed
