"""The plan of ``--compile``'s decode step: the per-product checks made once, and the pure step.

:func:`plan` makes the checks :func:`~chatcli.model.packed.fused_linear` makes on every call (is
each product still the packed weight or the fused quantised layer it was? is an adapter active? is the
bf16 oneDNN path chosen?) once per answer, and gathers the tensors the step reads into a
:class:`_Plan`, or raises :class:`NotCovered` saying why. :func:`_decode` is the step as a function of
tensors only, which :mod:`chatcli.model.compiled.package` exports and compiles ahead of time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from chatcli.model.compiled.onednn_op import onednn_linear
from chatcli.model.decode_step import DecodeStep, _attention, _rotate
from chatcli.model.lora_linear import LoRALinear
from chatcli.model.model import RMSNorm
from chatcli.model.packed import FusedGroup, QuantGroup, _members
from chatcli.model.qlinear import QuantizedEmbedding, QuantizedLinear


# --------------------------------------------------------------------------- the plan: checks, once


@dataclass(frozen=True)
class _Product:
    """One product's inputs for the graph: a dense input-major weight (``weight`` [out, in] view,
    ``bias``), oneDNN's prepacked copy of it (``onednn``, with ``bias``: the bf16 path the model chose
    for a few rows), or a quantised layer called through its public forward (``module``); ``splits``:
    (start, size) of each member's columns in the output."""

    weight: torch.Tensor | None
    bias: torch.Tensor | None
    module: nn.Module | None
    splits: tuple[tuple[int, int], ...]
    onednn: "torch.Tensor | PendingPack | None" = None


@dataclass(frozen=True)
class _LayerPlan:
    norm1: torch.Tensor
    qkv: _Product
    o: _Product
    norm2: torch.Tensor
    gate_up: _Product
    down: _Product
    q_norm: torch.Tensor | None
    k_norm: torch.Tensor | None


@dataclass(frozen=True)
class _Plan:
    embed: torch.Tensor | None  # [V, D] (any strides) for F.embedding, or None: ``embed_module`` looks up
    embed_module: nn.Module | None
    layers: tuple[_LayerPlan, ...]
    norm: torch.Tensor
    head: _Product
    eps: float
    heads: int
    kv_heads: int
    head_dim: int


class PendingPack:
    """oneDNN's prepacked copy of a group's weight, built on first use (:meth:`tensor`), not when the
    step is planned: the plan is made before an answer's first token, and the eager step too builds the
    copies in its first decode step, so a one-token answer never pays for them. Stands in the plan for
    the tensor it will be, as ``[shape, "mkldnn", dtype]`` in the package key."""

    is_mkldnn = True

    def __init__(self, group: FusedGroup, version: int):
        self.group, self.version = group, version
        self.shape, self.dtype = group.weight.shape, group.weight.dtype

    def tensor(self) -> torch.Tensor:
        return self.group.onednn_weight(self.version)


class NotCovered(Exception):
    """Why a model's decode step cannot be compiled as it is now (one phrase)."""


def _member(parent: nn.Module, name: str) -> nn.Module:
    m = parent._modules[name]
    if type(m) is LoRALinear:
        if not (m._fused_valid and m._fused is None) and m._fused_pair() is not None:
            raise NotCovered("a LoRA adapter is active")
        m = m.base
    return m


def _product(parent: nn.Module, names: tuple[str, ...], group: FusedGroup | QuantGroup | None,
             small_rows: bool) -> _Product:  # fmt: skip
    """The product of ``parent``'s linears ``names`` as :func:`~chatcli.model.packed.fused_linear`
    would run it now (its checks, made here once), or NotCovered."""
    mods = [_member(parent, n) for n in names]
    if isinstance(group, FusedGroup):
        for i, m in enumerate(mods):
            if type(m) is not nn.Linear or m.weight.data_ptr() != group.weight_ptrs[i]:
                raise NotCovered(f"{names[i]} is no longer its packed weight")
            if group.bias_ptrs is not None and (m.bias is None or m.bias.data_ptr() != group.bias_ptrs[i]):
                raise NotCovered(f"{names[i]}'s bias is no longer packed")
        splits = tuple(zip(group.starts, group.sizes))
        if small_rows and group.use_onednn and group.onednn_ok():  # fused_linear's oneDNN branch, same kernel
            _, version = _members(parent, group, False)  # fused_linear's own count (a merge rebuilds the copy)
            return _Product(None, group.bias, None, splits, PendingPack(group, version))
        return _Product(group.weight, group.bias, None, splits)
    if isinstance(group, QuantGroup):
        for m, ptr, name in zip(mods, group.ptrs, names):
            if type(m) is not group.member_type or m.qweight.data_ptr() != ptr:
                raise NotCovered(f"{name} is no longer its fused quantised layer")
        return _Product(None, None, group.fused, tuple(zip(group.starts, group.sizes)))
    if len(mods) == 1 and isinstance(mods[0], QuantizedLinear):
        return _Product(None, None, mods[0], ((0, mods[0].out_features),))
    if all(type(m) is nn.Linear for m in mods) and len(mods) == 1:
        return _Product(mods[0].weight, mods[0].bias, None, ((0, mods[0].out_features),))
    raise NotCovered(f"{', '.join(names)} are not packed")


def _norm_weight(norm: nn.Module) -> torch.Tensor:
    if type(norm) is not RMSNorm:
        raise NotCovered(f"a {type(norm).__name__} stands where an RMSNorm was")
    return norm.weight


def plan(model: nn.Module, rows: int) -> _Plan:
    """The tensors (and quantised layers) one decode step of ``model`` reads, checked once; NotCovered
    when the model is not as packing left it (see the module docstring)."""
    if DecodeStep.build(model) is None:
        raise NotCovered("the model is training, hooked or not a DecoderLM")
    if model.device.type != "cpu":
        raise NotCovered(f"compiling covers the CPU, not {model.device.type}")
    if rows != 1:
        raise NotCovered("batched candidates")
    if not getattr(model, "packed", False):
        raise NotCovered("the model is not packed")
    body, cfg = model.model, model.config
    small = rows <= 16  # packed.ONEDNN_MAX_ROWS: the rows a decode step feeds each product
    layers = []
    for layer in body.layers:
        attn, mlp = layer.self_attn, layer.mlp
        layers.append(_LayerPlan(
            _norm_weight(layer.input_layernorm),
            _product(attn, ("q_proj", "k_proj", "v_proj"), attn.qkv_group, small),
            _product(attn, ("o_proj",), attn.o_group, small),
            _norm_weight(layer.post_attention_layernorm),
            _product(mlp, ("gate_proj", "up_proj"), mlp.gate_up_group, small),
            _product(mlp, ("down_proj",), mlp.down_group, small),
            _norm_weight(attn.q_norm) if cfg.qk_norm else None,
            _norm_weight(attn.k_norm) if cfg.qk_norm else None,
        ))  # fmt: skip
    embed = body.embed_tokens
    if type(embed) is nn.Embedding and embed.max_norm is None:
        embed_weight, embed_module = embed.weight, None
    elif isinstance(embed, QuantizedEmbedding):
        embed_weight, embed_module = None, embed
    else:
        raise NotCovered(f"the embedding is a {type(embed).__name__}")
    head = _product(model, ("lm_head",), model.head_group, small)
    eps = {n.eps for l in body.layers for n in (l.input_layernorm, l.post_attention_layernorm)} | {body.norm.eps}
    if len(eps) != 1:
        raise NotCovered("the norms' eps differ")
    return _Plan(embed_weight, embed_module, tuple(layers), _norm_weight(body.norm), head, eps.pop(),
                 cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim)  # fmt: skip


# --------------------------------------------------------------------------- the pure step (compiled)


def _run(p: _Product, x: torch.Tensor) -> list[torch.Tensor]:
    if p.onednn is not None:
        y = onednn_linear(x, p.onednn, p.bias)
    else:
        y = F.linear(x, p.weight, p.bias) if p.module is None else p.module(x)
    return [y.narrow(-1, s, n) for s, n in p.splits]


def _rms(w: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    return w * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)  # RMSNorm.forward's casts


def _decode(plan: _Plan, ids: torch.Tensor, pos: torch.Tensor, keys: list[torch.Tensor],
            values: list[torch.Tensor], cos_table: torch.Tensor, sin_table: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Logits [B, V] for ids [B, 1] at position ``pos`` (0-d int64); writes keys/values[i][:, :, pos].
    N = keys[i].shape[2] is the cache's capacity (symbolic in the exported program); attention reads
    the filled positions ``[0, pos]`` only, as the eager step does (the same kernel on the same
    shapes: the same numbers, see the package module's docstring).
    With a quantised head, the normed hidden state [B, 1, D] instead: the int8 head recomputes its
    largest logits exactly with data-dependent shapes (``nonzero``), which a graph cannot hold."""
    B = ids.shape[0]
    H, KV, Dh, eps = plan.heads, plan.kv_heads, plan.head_dim, plan.eps
    N = keys[0].shape[2]
    where = pos.view(1)
    filled = pos.item() + 1  # data-dependent in the exported program: one program for every position
    torch._check(filled >= 1)
    torch._check(filled <= N)
    cos, sin = cos_table.index_select(0, where), sin_table.index_select(0, where)  # [1, 1, Dh]
    x = F.embedding(ids, plan.embed) if plan.embed_module is None else plan.embed_module(ids)  # [B, 1, D]
    for i, layer in enumerate(plan.layers):
        q, k, v = _run(layer.qkv, _rms(layer.norm1, x, eps))
        q, k = q.reshape(B, 1, H, Dh), k.reshape(B, 1, KV, Dh)
        if layer.q_norm is not None:
            q, k = _rms(layer.q_norm, q, eps), _rms(layer.k_norm, k, eps)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        keys[i].index_copy_(2, where, k.transpose(1, 2))  # [B, KV, 1, Dh] into slot pos
        values[i].index_copy_(2, where, v.reshape(B, 1, KV, Dh).transpose(1, 2))
        out = _attention(q.transpose(1, 2), keys[i][:, :, :filled], values[i][:, :, :filled])  # the eager call
        (o,) = _run(layer.o, out.transpose(1, 2).reshape(B, 1, H * Dh))  # out: [B, H, 1, Dh]
        x = x + o
        gate, up = _run(layer.gate_up, _rms(layer.norm2, x, eps))
        (down,) = _run(layer.down, F.silu(gate) * up)
        x = x + down
    h = _rms(plan.norm, x, eps)  # [B, 1, D]
    if plan.head.module is not None:
        return h  # a quantised head runs after the graph (see CompiledStep.__call__)
    (logits,) = _run(plan.head, h)
    return logits.view(B, -1)  # [B, V]
