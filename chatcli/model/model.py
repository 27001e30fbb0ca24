"""The decoder-only transformer: token ids in, next-token logits out.

``DecoderLM(config)`` covers the llama family and its small variations (Mistral,
Qwen2's q/k/v bias, Qwen3's per-head q/k norms, tied or separate LM head). Module
names mirror Hugging Face's exactly (``model.layers.3.self_attn.q_proj``), so a
checkpoint's state dict loads with no key translation and PEFT adapter keys name
our modules. The model knows nothing about tokenization or sampling.

``forward(input_ids [B, S], cache=None, attention_mask=None) -> logits [B, S, V]``:
with a :class:`KVCache` the new tokens sit at positions ``cache.length ...``, are
written into the cache, and ``cache.length`` advances by S. ``attention_mask``
[B, S_total] (1 = real token, 0 = padding; S_total = cached + new) lets rows of
different lengths share a batch; positions are then counted over real tokens only,
so a left- or right-padded row gives the logits of the same row unpadded.
Logits come back in the model dtype; norms and RoPE angles run in float32 as HF does.

Speed: after :func:`~chatcli.model.packed.pack_model` (done by the checkpoint loader)
q/k/v and gate/up each run as one input-major matmul; a model that is not packed, or
whose modules were replaced, calls the modules one by one with the same results. While LoRA
adapters train, a packed group runs as one autograd node with its adapters
(:mod:`~chatcli.model.training.lora_group`), and q/k/v+RoPE, SwiGLU and the norms take hand-written
backward passes (:mod:`~chatcli.model.training.fusions`): the same values, fewer copies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from chatcli.model.config import ModelConfig
from chatcli.model.kernel_choice import DEFAULT as DEFAULT_CHOICES, KernelChoices
from chatcli.model.kv_cache import KVCache
from chatcli.model.packed import FusedGroup, fused_linear, linear, pack_model, trained_group_output
from chatcli.model.qlinear import float_dtype_device
from chatcli.model.rope import RotaryEmbedding, rotate
from chatcli.model.training.fusions import qkv_rope, rms_norm, swiglu


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., D]; normalise in float32, scale in the input dtype (HF's order of casts).
        # F.rms_norm computes x * rsqrt(mean(x^2) + eps) bit-identically to HF's three ops, in one.
        if x.requires_grad and torch.is_grad_enabled():  # training: the same values, a leaner backward
            return rms_norm(x, self.weight, self.eps)
        h = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * h.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads = config.num_attention_heads
        self.n_kv = config.num_key_value_heads
        self.head_dim = config.head_dim
        d, hd = config.hidden_size, config.head_dim
        self.q_proj = nn.Linear(d, self.n_heads * hd, bias=config.attention_bias)
        self.k_proj = nn.Linear(d, self.n_kv * hd, bias=config.attention_bias)
        self.v_proj = nn.Linear(d, self.n_kv * hd, bias=config.attention_bias)
        self.o_proj = nn.Linear(self.n_heads * hd, d, bias=config.o_proj_bias)
        if config.qk_norm:
            self.q_norm = RMSNorm(hd, config.rms_norm_eps)
            self.k_norm = RMSNorm(hd, config.rms_norm_eps)
        else:
            self.q_norm = self.k_norm = None
        self.qkv_group: FusedGroup | None = None  # set by pack_model
        self.o_group: FusedGroup | None = None

    def project(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q [B, H, S, Dh], k and v [B, KV, S, Dh] for x [B, S, D]: the projections after the
        q/k norms and RoPE, exactly what attention reads (the attention probe reads them too)."""
        B, S, _ = x.shape
        if torch.is_grad_enabled() and self.q_norm is None:  # training LoRA: q/k/v and RoPE leave their
            y = trained_group_output(self, self.qkv_group, x)  # gradient in one tensor (model.training.fusions)
            if y is not None:
                q, k, v = qkv_rope(y, cos, sin, self.n_heads, self.n_kv)
                return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        qkv = fused_linear(self, self.qkv_group, x)  # one matmul when packed, else None
        q, k, v = qkv if qkv is not None else (self.q_proj(x), self.k_proj(x), self.v_proj(x))
        q = q.view(B, S, self.n_heads, self.head_dim)
        k = k.view(B, S, self.n_kv, self.head_dim)
        v = v.view(B, S, self.n_kv, self.head_dim)
        if self.q_norm is not None:  # Qwen3: per-head norm before RoPE
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)  # cos/sin [B, S, 1, Dh]
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H|KV, S, Dh]

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None,
    ) -> torch.Tensor:
        B, S, _ = x.shape  # x: [B, S, D]
        q, k, v = self.project(x, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # [B, KV, T, Dh], T = cached + S
        out = _sdpa(q, k, v, mask, causal=mask is None and k.shape[2] == S and S > 1)  # [B, H, S, Dh]
        return linear(self, "o_proj", self.o_group, out.transpose(1, 2).reshape(B, S, self.n_heads * self.head_dim))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d, f, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(d, f, bias=bias)
        self.up_proj = nn.Linear(d, f, bias=bias)
        self.down_proj = nn.Linear(f, d, bias=bias)
        self.gate_up_group: FusedGroup | None = None  # set by pack_model
        self.down_group: FusedGroup | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # training LoRA: the gate/up gradient in one tensor (model.training.fusions)
            y = trained_group_output(self, self.gate_up_group, x)
            if y is not None:
                return linear(self, "down_proj", self.down_group, swiglu(y))
        gate_up = fused_linear(self, self.gate_up_group, x)  # one matmul when packed, else None
        gate, up = gate_up if gate_up is not None else (self.gate_proj(x), self.up_proj(x))
        return linear(self, "down_proj", self.down_group, F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.self_attn = Attention(config, layer_idx)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class DecoderBody(nn.Module):
    """HF's ``model`` submodule: embeddings, layers, final norm."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config)


class DecoderLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = DecoderBody(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.gradient_checkpointing = False
        self.packed = False  # weights in the packed layout (chatcli.model.packed)
        self.head_group: FusedGroup | None = None
        # Compute paths (chatcli.model.kernel_choice); set with packed.use_kernel_choices.
        self.kernel_choices: KernelChoices = DEFAULT_CHOICES
        if config.tie_word_embeddings:
            self.tie_weights()

    # --- weights -------------------------------------------------------------

    def tie_weights(self) -> None:
        """Share the embedding matrix with the LM head (SmolLM2 and most small models)."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def checkpoint_keys(self) -> dict[str, tuple[int, ...]]:
        """The tensors a checkpoint must provide, with their shapes (tied head excluded)."""
        keys = {k: tuple(v.shape) for k, v in self.state_dict().items()}
        if self.config.tie_word_embeddings:
            keys.pop("lm_head.weight", None)
        return keys

    def _apply(self, fn, recurse: bool = True):
        # .to(dtype/device) converts each view on its own: fuse again from the new weights.
        out = super()._apply(fn, recurse)
        if self.packed:
            pack_model(self)
        return out

    def reset_buffers(self, device: torch.device | str) -> None:
        """Recompute derived buffers (RoPE frequencies) on ``device``."""
        self.model.rotary_emb.reset_buffers(device)

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute layer activations in backward instead of storing them (training only)."""
        self.gradient_checkpointing = enabled

    @property
    def dtype(self) -> torch.dtype:
        # Not embed_tokens.weight: a lookup from the int8 head's rows would dequantise its table to answer.
        return float_dtype_device(self.model.embed_tokens)[0]

    @property
    def device(self) -> torch.device:
        return float_dtype_device(self.model.embed_tokens)[1]

    # --- forward -------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor,
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        last_only: bool = False,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B, S, V] (or [B, 1, V] for the last position when ``last_only``). ``positions``
        [B, S] bool: the head on those positions only, logits [N, V] in row-major order (training
        needs no logits where no loss is taken; at vocab 49k the head is a fifth of the FLOPs)."""
        h = self.hidden_states(input_ids, cache, attention_mask)  # [B, S, D]
        if last_only:
            h = h[:, -1:]
        elif positions is not None:
            h = h[positions]  # [N, D]
        return linear(self, "lm_head", self.head_group, h)

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final normed hidden states [B, S, D] (what ``lm_head`` reads)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
        B, S = input_ids.shape
        past = cache.length if cache is not None else 0
        total = past + S
        if cache is not None:
            if cache.batch_size != B:
                raise ValueError(f"cache has {cache.batch_size} rows but input_ids has {B}")
            cache.ensure(total)
        if attention_mask is not None and tuple(attention_mask.shape) != (B, total):
            raise ValueError(
                f"attention_mask must be [batch, cached + new] = {(B, total)}, got {tuple(attention_mask.shape)}"
            )

        positions = _positions(B, S, past, attention_mask, input_ids.device)  # [B, S]
        mask = _attention_mask(S, past, attention_mask, input_ids.device)  # [B|1, 1, S, T] bool or None
        x = self.model.embed_tokens(input_ids)  # [B, S, D]
        cos, sin = self.model.rotary_emb(positions, x.dtype)  # [B, S, 1, Dh], once for all layers

        use_ckpt = self.gradient_checkpointing and self.training and cache is None and torch.is_grad_enabled()
        for layer in self.model.layers:
            if use_ckpt:
                x = checkpoint(layer, x, cos, sin, mask, None, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask, cache)
        if cache is not None:
            cache.advance(S)
        return self.model.norm(x)


def _positions(
    B: int, S: int, past: int, attention_mask: torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    """Rotary positions [B, S] of the new tokens: their index among the row's real tokens."""
    if attention_mask is None:
        return torch.arange(past, past + S, device=device).expand(B, S)
    counted = attention_mask.long().cumsum(-1) - 1  # [B, T]
    return counted[:, past:].clamp(min=0)


def _attention_mask(
    S: int, past: int, attention_mask: torch.Tensor | None, device: torch.device
) -> torch.Tensor | None:
    """Boolean mask [B|1, 1, S, T] (True = may attend), or None where SDPA needs none.

    None for a plain prefill (``is_causal``) and for one new token over a cache
    without padding (it sees everything). Otherwise causal over absolute positions,
    and with padding the padded keys are hidden. Every query keeps its own key so a
    padding query's row is never fully masked (SDPA would return NaN there, and a
    NaN value leaks into real rows through 0 * NaN in the next layer).
    """
    if attention_mask is None and (past == 0 or S == 1):
        return None
    T = past + S
    q_pos = torch.arange(past, T, device=device)[:, None]  # [S, 1]
    k_pos = torch.arange(T, device=device)[None, :]  # [1, T]
    allowed = (k_pos <= q_pos)[None, None]  # [1, 1, S, T]
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()[:, None, None, :]  # [B, 1, S, T]
        allowed = allowed | (k_pos == q_pos)[None, None]
    return allowed


_HAS_GQA = "enable_gqa" in (F.scaled_dot_product_attention.__doc__ or "")


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
    """Grouped-query attention: q [B, H, S, Dh], k/v [B, KV, T, Dh] -> [B, H, S, Dh]."""
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        if _HAS_GQA and q.device.type != "mps":
            # No copy of the cache per step (2-3x faster decode on CPU than repeating).
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True)
        # Repeat kv heads: head h reads kv head h // groups, as HF's repeat_kv does.
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
