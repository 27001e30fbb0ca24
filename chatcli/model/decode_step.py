"""The lean decode step: one new token per row through the model, and nothing else.

:class:`DecodeStep` computes exactly what ``DecoderLM.forward(ids [B, 1], cache,
last_only=True)`` computes, bit for bit, with fewer operations per token:

* the rotary ``cos``/``sin`` of the position are read from a table computed once for the
  cache's capacity (:meth:`RotaryEmbedding.table`), not recomputed from the position
  (an ``arange``, a product, two ``cat``, ``cos``, ``sin`` and two casts per token);
* no attention mask is built (one new token over a cache without padding sees it all,
  as the model's own forward decides);
* q and k, adjacent in the fused q/k/v output, are rotated in one pass (four operations,
  not eight), and the new key and value are written straight into their slot of the
  preallocated :class:`~chatcli.model.kv_cache.KVCache` (no per-token allocation: the
  generator reserves the cache for prompt + answer before the first token);
* the layers run as one flat loop over prebound weights: no module calls, no per-token
  ``hasattr``/``isinstance`` walks.

The matrix products, the embedding lookup and any norm that is not the model's own
still go through :func:`~chatcli.model.packed.fused_linear` and
:func:`~chatcli.model.packed.linear` (or the quantised modules themselves), so the kernel a
product takes, the LoRA side paths and the fallbacks stay those of the model's forward.

:meth:`DecodeStep.build` returns None for a model in training mode, one that is not a
:class:`~chatcli.model.model.DecoderLM`, or one with forward hooks (which see module calls
the step does not make): the caller then runs the model's forward. A step is
built per answer (the generator holds the model for the whole answer, so no weight changes
under it) and is cheap to build.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from chatcli.model.kv_cache import KVCache
from chatcli.model.model import DecoderLM, RMSNorm, _sdpa
from chatcli.model.packed import fused_linear, linear


@dataclass(frozen=True)
class _Layer:
    attn: nn.Module
    mlp: nn.Module
    norm1: nn.Module
    norm2: nn.Module


class DecodeStep:
    """One token per row of a :class:`~chatcli.model.model.DecoderLM` (see the module docstring)."""

    def __init__(self, model: nn.Module):
        body = model.model
        cfg = model.config
        self.model = model
        self.embed = body.embed_tokens
        self.layers = tuple(_Layer(l.self_attn, l.mlp, l.input_layernorm, l.post_attention_layernorm)
                            for l in body.layers)  # fmt: skip
        self.norm = body.norm
        self.rotary = body.rotary_emb
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        self.qk_norm = cfg.qk_norm
        self.dtype = model.dtype

    @classmethod
    def build(cls, model: nn.Module) -> "DecodeStep | None":
        """The step for ``model``, or None when it does not cover it (see the module docstring)."""
        if not isinstance(model, DecoderLM) or model.training or _hooked(model):
            return None
        return cls(model)

    @torch.inference_mode()
    def __call__(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits [B, V] in the model dtype for ids [B, 1] at position ``cache.length``; writes the
        cache's slot and advances it by one."""
        B = ids.shape[0]
        pos = cache.length
        if cache.batch_size != B:
            raise ValueError(f"cache has {cache.batch_size} rows but ids has {B}")
        cache.ensure(pos + 1)
        cos, sin = self.rotary.table(cache.capacity, self.dtype)  # [N, 1, Dh] each
        cos, sin = cos[pos], sin[pos]  # [1, Dh]: broadcast over [B, 1, heads, Dh]
        H, KV, Dh = self.n_heads, self.n_kv, self.head_dim
        x = _embed(self.embed, ids)  # [B, 1, D]
        for i, layer in enumerate(self.layers):
            h = _norm(layer.norm1, x)
            attn = layer.attn
            qkv = fused_linear(attn, attn.qkv_group, h)  # [q, k, v] views of one product, or None
            if qkv is None:
                qkv = [attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)]
            q, k, v = qkv
            keys, values = cache.keys[i], cache.values[i]  # [B, KV, N, Dh]
            if self.qk_norm:  # Qwen3: per-head norms before RoPE, so q and k rotate apart
                q = _rotate(_norm(attn.q_norm, q.view(B, 1, H, Dh)), cos, sin)
                k = _rotate(_norm(attn.k_norm, k.view(B, 1, KV, Dh)), cos, sin)
            elif q.data_ptr() + q.shape[-1] * q.element_size() == k.data_ptr() and q.stride() == k.stride():
                # q and k adjacent columns of one product: rotate them together.
                qk = _rotate(q.as_strided((B, 1, H + KV, Dh), (q.stride(0), q.stride(1), Dh, 1)), cos, sin)
                q, k = qk[:, :, :H], qk[:, :, H:]
            else:
                q, k = _rotate(q.view(B, 1, H, Dh), cos, sin), _rotate(k.view(B, 1, KV, Dh), cos, sin)
            keys.select(2, pos).copy_(k.view(B, KV, Dh))
            values.select(2, pos).copy_(v.view(B, KV, Dh))
            out = _attention(q.transpose(1, 2), keys[:, :, : pos + 1], values[:, :, : pos + 1])  # [B, H, 1, Dh]
            x = x + linear(attn, "o_proj", attn.o_group, out.transpose(1, 2).reshape(B, 1, H * Dh))
            h = _norm(layer.norm2, x)
            mlp = layer.mlp
            gate_up = fused_linear(mlp, mlp.gate_up_group, h)
            gate, up = gate_up if gate_up is not None else (mlp.gate_proj(h), mlp.up_proj(h))
            x = x + linear(mlp, "down_proj", mlp.down_group, F.silu(gate) * up)
        cache.advance(1)
        h = _norm(self.norm, x)
        return linear(self.model, "lm_head", self.model.head_group, h).view(B, -1)  # [B, V]


def _hooked(model: nn.Module) -> bool:
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def _norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if type(norm) is not RMSNorm:  # something put in its place: call it, as the model does
        return norm(x)
    # RMSNorm.forward without the module call: the same casts in the same order.
    return norm.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=norm.eps).to(x.dtype)


def _embed(embed: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    if type(embed) is not nn.Embedding or embed.max_norm is not None:  # e.g. a lookup from the int8 head's rows
        return embed(ids)
    return F.embedding(ids, embed.weight)  # the module's own lookup (no padding_idx or max_norm here)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # chatcli.model.rope.rotate with the swap as one roll (pure data movement: the same bits).
    return x * cos + torch.roll(x, x.shape[-1] // 2, dims=-1) * sin


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _sdpa(q, k, v, None, causal=False)  # the model's own call (GQA handled per device)
