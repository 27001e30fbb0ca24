"""Packed weight layout: linear weights stored input-major, q/k/v and gate/up fused.

On CPU a matrix-vector product reads a weight stored ``[in, out]`` (input-major) about
1.6x faster than the same weight stored ``[out, in]`` through ``F.linear`` (whole model,
float32, one thread: 34 ms against 54 ms per token here; see benchmarks/PERFLOG.md).
:func:`pack_model`, run once after loading, rewrites the weights into that layout:

* q/k/v of each layer share one ``[D, Oq+Ok+Ov]`` tensor, gate/up one ``[D, 2F]`` tensor
  (one matmul instead of three or two: fewer ops per token);
* o_proj, down_proj and lm_head are groups of one (their own ``[in, out]`` tensor);
* a tied embedding becomes one ``[D, V]`` tensor: the head multiplies by it, the lookup
  gathers its columns, and the one Parameter object still serves both (no doubled memory).

The HF-named modules and Parameter objects stay: each ``weight`` becomes a view
(``[out, in]``, strides ``(1, out_total)``) into the packed storage, so state_dict keys,
LoRA wrapping and in-place merging all work on the views and write the packed storage.
``F.linear`` on such a view is the fast input-major product, so even a module called on
its own is fast. The views are not contiguous: writers call ``.contiguous()`` (safetensors
requires it).

:func:`fused_linear` runs a group (q/k/v or gate/up) as one matmul plus each wrapped
member's LoRA side path, when every member still is a plain ``nn.Linear`` (or a
``LoRALinear`` around one) whose weight is still the view into the group. Anything else
(a module replaced by a quantised one, weights re-assigned or moved, a base weight being
trained) returns None and the caller calls the modules: never wrong, only slower.

Int8 and int4 models (:mod:`chatcli.model.quantize`) fuse q/k/v and gate/up too, as row
blocks of one quantised layer (:mod:`chatcli.model.quant_group`: one kernel call per group);
:func:`pack_model` builds those groups and :func:`fused_linear` runs them. ``QuantGroup`` and
``quant_group`` stay importable from here.

bfloat16 decode: a group may also keep the weight prepacked for oneDNN
(:meth:`FusedGroup.onednn_weight`), used for products of at most ``bf16_onednn_max_rows``
rows (16 by default) when the model's :class:`~chatcli.model.kernel_choice.KernelChoices` say
``bf16_small_rows="onednn"``; this doubles the bf16 weights' memory (to float32's size)
for ~1.9x faster bf16 matrix-vector products on an AMD machine and ~1.6x on one core of an
Intel Xeon with AMX (it once read as slower there: a calibration timed the building of the copy;
benchmarks/PERFLOG.md): which path, and up to how many rows, is measured per CPU
(:mod:`chatcli.engine.calibration`).

:func:`use_kernel_choices` gives a model its choices and pushes them into its groups and
quantised layers (the row limits of the int8/int4 kernels); :func:`pack_model` pushes the
model's choices again into the groups it builds.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from chatcli.model.int4 import Int4Linear
from chatcli.model.int8 import Int8Linear
from chatcli.model.kernel_choice import DEFAULT as DEFAULT_CHOICES, KernelChoices
from chatcli.model.training.lora_group import group_with_lora
from chatcli.model.lora_linear import LoRALinear, ReplacedModule
from chatcli.model.quant_group import QuantGroup, quant_group  # QuantGroup is also imported from here (model.compiled.step_plan)


class FusedGroup:
    """Linears ``names`` of one parent module whose weights are column blocks of ``weight_t``."""

    def __init__(self, weight_t: torch.Tensor, bias: torch.Tensor | None, names: Sequence[str], sizes: Sequence[int]):
        self.weight_t = weight_t  # [in, O_total] contiguous; kept alive so the pointers below stay ours
        self.weight = weight_t.t()  # [O_total, in] view: what F.linear reads input-major
        self.bias = bias  # [O_total] or None
        self.names = tuple(names)
        self.sizes = tuple(sizes)
        elem = weight_t.element_size()
        self.starts = tuple(sum(self.sizes[:i]) for i in range(len(self.sizes)))
        self.weight_ptrs = tuple(weight_t.data_ptr() + s * elem for s in self.starts)
        self.bias_ptrs = tuple(bias.data_ptr() + s * elem for s in self.starts) if bias is not None else None
        self._onednn: torch.Tensor | None = None  # bf16 decode copy, see onednn_weight
        self._onednn_version = -1
        self.use_onednn = DEFAULT_CHOICES.bf16_small_rows == "onednn"  # the model's KernelChoices decide
        self.onednn_max_rows = DEFAULT_CHOICES.bf16_onednn_max_rows  # (both set by use_kernel_choices)

    def onednn_weight(self, version: int) -> torch.Tensor:
        """The weight prepacked in oneDNN's blocked layout (bf16 on CPU: its matrix-vector
        kernel reads it ~1.9x faster than aten's bf16 mm reads any dense layout). A second
        copy of the weight, rebuilt when ``version`` (the sum of the members' Parameter
        version counters, bumped by any in-place write such as a LoRA merge) changed."""
        if self._onednn is None or self._onednn_version != version:
            with torch.inference_mode(False), torch.no_grad():
                self._onednn = torch.ops.mkldnn._reorder_linear_weight(self.weight.contiguous(), 1)
            self._onednn_version = version
        return self._onednn

    def onednn_ok(self) -> bool:
        """Whether the oneDNN path can serve this group (bf16 on CPU with oneDNN), whatever the choice."""
        return self.weight_t.dtype == torch.bfloat16 and self.weight_t.device.type == "cpu" and _HAS_ONEDNN

    def choose_onednn(self, use: bool, keep: bool = False) -> None:
        """Take the oneDNN path for small bf16 products or not; not drops the prepacked copy (its memory)
        unless ``keep`` (a calibration switching back and forth: building the copy again would be
        timed as part of the next oneDNN candidate's first token)."""
        self.use_onednn = use
        if not use and not keep:
            self._onednn, self._onednn_version = None, -1


# Rows (batch x new tokens) up to which the bf16 oneDNN path runs by default: decode steps and
# batched candidates; a long prefill is compute-bound and aten's bf16 mm serves it. A model's
# KernelChoices.bf16_onednn_max_rows (calibrated per CPU) sets each group's own limit.
ONEDNN_MAX_ROWS = DEFAULT_CHOICES.bf16_onednn_max_rows
_HAS_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _base(module: nn.Module) -> nn.Module:
    return module.base if isinstance(module, (LoRALinear, ReplacedModule)) else module


def _plain_linear(module: nn.Module) -> bool:
    return type(module) is nn.Linear and module.weight.dim() == 2


def relayout(module: nn.Module) -> None:
    """Store one Linear's / Embedding's weight input-major, keeping its Parameter object."""
    base = _base(module)
    if not isinstance(base, (nn.Linear, nn.Embedding)) or base.weight.dim() != 2:
        return  # a quantised or unknown module: leave it as it is
    w = base.weight
    if w.stride() == (1, w.shape[0]):
        return  # already input-major
    with torch.no_grad():
        w.data = w.data.t().contiguous().t()  # [out, in] view of an [in, out] tensor


def _laid_out(mods: Sequence[nn.Linear]) -> torch.Tensor | None:
    """The [in, O_total] tensor whose column blocks the weights of ``mods`` already are, in order
    (a model loaded in the packed layout, or packed again unchanged), or None."""
    w0 = mods[0].weight
    total = sum(m.out_features for m in mods)
    start, ptr, col = w0.storage_offset(), w0.untyped_storage().data_ptr(), 0
    for m in mods:
        w = m.weight
        if w.stride() != (1, total) or w.untyped_storage().data_ptr() != ptr or w.storage_offset() != start + col:
            return None
        col += m.out_features
    if (start + w0.shape[1] * total) * w0.element_size() > w0.untyped_storage().nbytes():
        return None
    return w0.detach().as_strided((w0.shape[1], total), (total, 1), start)


def pack_group(parent: nn.Module, names: Sequence[str]) -> FusedGroup | None:
    """Fuse the Linears ``names`` of ``parent`` into one input-major tensor (None if they cannot be)."""
    mods = [_base(getattr(parent, n)) for n in names]
    if not all(_plain_linear(m) for m in mods):
        return None
    w0 = mods[0].weight
    if any(m.weight.dtype != w0.dtype or m.weight.device != w0.device or m.in_features != mods[0].in_features
           for m in mods):  # fmt: skip
        return None
    has_bias = [m.bias is not None for m in mods]
    if any(has_bias) and not all(has_bias):
        return None
    with torch.no_grad():
        weight_t = _laid_out(mods)  # loaded in this layout (chatcli.hub.packed_cache): nothing to copy
        if weight_t is None:
            # One preallocated tensor filled by transposing copies: about twice as fast as
            # torch.cat of transposed views, and packing is on every load's path.
            weight_t = torch.empty(w0.shape[1], sum(m.out_features for m in mods), dtype=w0.dtype, device=w0.device)
            col = 0
            for m in mods:
                weight_t[:, col : col + m.out_features].copy_(m.weight.detach().t())  # [in, O_total]
                col += m.out_features
        bias = torch.cat([m.bias.detach() for m in mods]) if all(has_bias) else None  # [O_total]
        start = 0
        for m in mods:
            o = m.out_features
            m.weight.data = weight_t[:, start : start + o].t()  # [o, in], strides (1, O_total)
            if bias is not None:
                m.bias.data = bias[start : start + o]
            start += o
    return FusedGroup(weight_t, bias, names, [m.out_features for m in mods])


def fused_linear(parent: nn.Module, group: FusedGroup | QuantGroup | None, x: torch.Tensor) -> list[torch.Tensor] | None:
    """The outputs of ``group``'s modules for input x [..., in] from one matmul, each [..., o_i],
    or None when the modules must be called one by one (see the module docstring)."""
    if group is None:
        return None
    if not isinstance(group, FusedGroup):
        return group.run(parent, x)  # a QuantGroup
    grad = torch.is_grad_enabled()
    found = _members(parent, group, grad)
    if found is None:
        return None
    loras, version = found
    rows = x.shape[:-1].numel()
    small = rows <= group.onednn_max_rows and not (grad and x.requires_grad)  # no autograd there
    # Past the default 16 rows (a prompt), only a copy that is already built serves: the first prompt's
    # time to its first token never pays the reorder of every weight (the first decode step builds it).
    ready = rows <= ONEDNN_MAX_ROWS or group._onednn_version == version
    if grad and _trains(loras):  # the adapters' terms are in y already: no side path left to add
        y, loras = _trained(group, loras, x), [None] * len(loras)
    elif small and ready and group.use_onednn and x.dtype == torch.bfloat16 and group.onednn_ok():
        y = torch.ops.mkldnn._linear_pointwise(x, group.onednn_weight(version), group.bias, "none", [], "")
    else:
        y = F.linear(x, group.weight, group.bias)  # [..., O_total]
    if len(group.sizes) == 1:  # (split's backward would copy the gradient: a cat of one)
        outs = [y]
    elif y.requires_grad:  # split's backward is one cat (narrow's: a zero-filled [.., O_total] per member)
        outs = list(y.split(group.sizes, -1))  # the LoRA side paths add out of place here
    else:  # narrow, not split: autograd refuses in-place writes (the LoRA side path) to split's views
        outs = [y.narrow(-1, s, n) for s, n in zip(group.starts, group.sizes)]
    for i, lora in enumerate(loras):
        if lora is not None:
            outs[i] = lora.add_side(x, outs[i])
    return outs


def trained_group_output(parent: nn.Module, group: FusedGroup | QuantGroup | None,
                         x: torch.Tensor) -> torch.Tensor | None:  # fmt: skip
    """The whole output [..., O_total] of a float group whose LoRA terms train now (gradients on,
    base frozen), through :class:`~chatcli.model.training.lora_group.LoRAGroupFn`; else None. For a
    caller that consumes the members together (:mod:`chatcli.model.training.fusions`) and so leaves
    their gradient in one tensor."""
    if not isinstance(group, FusedGroup) or not torch.is_grad_enabled():
        return None
    found = _members(parent, group, True)
    return _trained(group, found[0], x) if found is not None and _trains(found[0]) else None


def _members(parent: nn.Module, group: FusedGroup, grad: bool) -> tuple[list[LoRALinear | None], int] | None:
    """(each member's LoRA wrapper or None, the sum of the base weights' version counters) when every
    member still is a plain Linear (or a LoRALinear around one) whose weight is its view into the
    group, frozen while gradients are on; else None."""
    loras: list[LoRALinear | None] = []
    version = 0
    modules = parent._modules
    for i, name in enumerate(group.names):
        m = modules[name]
        lora = None
        if type(m) is LoRALinear:
            lora, m = m, m.base
        if type(m) is not nn.Linear:
            return None
        w = m.weight
        if w.data_ptr() != group.weight_ptrs[i] or (grad and w.requires_grad):
            return None
        if group.bias_ptrs is not None and (m.bias is None or m.bias.data_ptr() != group.bias_ptrs[i]):
            return None
        loras.append(lora)
        version += w._version
    return loras, version


def _trains(loras: list[LoRALinear | None]) -> bool:
    return any(lora is not None and lora.trains() for lora in loras)


def _trained(group: FusedGroup, loras: list[LoRALinear | None], x: torch.Tensor) -> torch.Tensor:
    members = list(zip(group.starts, group.sizes, loras))
    training = any(lora is not None and lora.training for lora in loras)
    return group_with_lora(x, group.weight_t, group.bias, members, training)


def linear(parent: nn.Module, name: str, group: FusedGroup | None, x: torch.Tensor) -> torch.Tensor:
    """One packed Linear ``name`` of ``parent`` (through the fast path when it can be used)."""
    out = fused_linear(parent, group, x)
    return out[0] if out is not None else getattr(parent, name)(x)


def pack_model(model: nn.Module) -> None:
    """Rewrite a :class:`~chatcli.model.model.DecoderLM`'s weights into the packed layout (idempotent:
    packing again re-fuses from the current weights, e.g. after ``model.to(dtype)``)."""
    body = model.model
    for layer in body.layers:
        attn, mlp = layer.self_attn, layer.mlp
        # Float members fuse into one input-major tensor, quantised ones into one quantised layer.
        qkv, gate_up = ("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj")
        attn.qkv_group = pack_group(attn, qkv) or quant_group(attn, qkv)
        attn.o_group = pack_group(attn, ("o_proj",))
        mlp.gate_up_group = pack_group(mlp, gate_up) or quant_group(mlp, gate_up)
        mlp.down_group = pack_group(mlp, ("down_proj",))
    # A tied head shares the embedding's Parameter: packing the head re-lays out both
    # (the lookup then gathers columns of the [D, V] tensor).
    model.head_group = pack_group(model, ("lm_head",))
    head = _base(model.lm_head)
    quantised_head = isinstance(head, (Int8Linear, Int4Linear))  # (its .weight would dequantise it)
    if not quantised_head and (model.head_group is None or _base(body.embed_tokens).weight is not head.weight):
        relayout(body.embed_tokens)
    # With a quantised head the embedding only serves the lookup, which reads rows: it keeps
    # its row-major layout (a copy into input-major would cost a second embedding at the peak).
    # The norm weights may still be views of the memory-mapped checkpoint, and one live view
    # keeps the mapping, with every page packing read, resident (+538 MB RSS for float32):
    # give the 1-D parameters their own memory, except the biases that are group views.
    groups = _layer_groups(model)
    fused_biases = [g.bias if isinstance(g, FusedGroup) else g.fused.bias for g in groups]
    group_biases = {b.untyped_storage().data_ptr() for b in fused_biases if b is not None}
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1 and p.untyped_storage().data_ptr() not in group_biases:
                p.data = p.data.clone()
    model.packed = True
    use_kernel_choices(model, model.kernel_choices)  # the new groups and fused layers take the model's choices


def _layer_groups(model: nn.Module) -> list[FusedGroup | QuantGroup]:
    """The decoder layers' groups (q/k/v, o, gate/up, down) that packing built."""
    return [g for layer in model.model.layers for g in (layer.self_attn.qkv_group, layer.self_attn.o_group,
                                                        layer.mlp.gate_up_group, layer.mlp.down_group) if g is not None]


def use_kernel_choices(model: nn.Module, choices: KernelChoices, keep_prepacked: bool = False) -> None:
    """Make ``choices`` the :class:`~chatcli.model.model.DecoderLM`'s ``kernel_choices`` and push them
    into what reads them: each fused float group (the bf16 small-rows path and its row limit; choosing
    ``plain`` frees the oneDNN copies unless ``keep_prepacked``) and each int8/int4 layer, the fused ones included
    (the kernels' row limits)."""
    model.kernel_choices = choices
    groups = _layer_groups(model) + ([model.head_group] if model.head_group is not None else [])
    quantised = [m for m in model.modules() if isinstance(m, (Int8Linear, Int4Linear))]
    for g in groups:
        if isinstance(g, FusedGroup):
            g.choose_onednn(choices.bf16_small_rows == "onednn", keep=keep_prepacked)
            g.onednn_max_rows = choices.bf16_onednn_max_rows
        else:
            quantised.append(g.fused)  # the fused layer is no registered module: reach it through its group
    for layer in quantised:
        layer.kernel_max_rows = choices.int8_max_rows if isinstance(layer, Int8Linear) else choices.int4_max_rows


def prepack(model: nn.Module) -> int:
    """Build now the oneDNN copies that the groups taking the bf16 oneDNN path would build on their first
    small product (so a timed decode does not pay a reorder of every weight in its first token: a
    calibration measured oneDNN ~10x slower than it is that way). Returns how many groups have a copy.
    A group whose members are no longer its plain views is skipped (:func:`fused_linear` would not use it)."""
    pairs = [(layer.self_attn, g) for layer in model.model.layers for g in (layer.self_attn.qkv_group,
                                                                           layer.self_attn.o_group)]
    pairs += [(layer.mlp, g) for layer in model.model.layers for g in (layer.mlp.gate_up_group, layer.mlp.down_group)]
    pairs.append((model, model.head_group))
    built = 0
    for parent, g in pairs:
        if not isinstance(g, FusedGroup) or not g.use_onednn or not g.onednn_ok():
            continue
        mods = [parent._modules[name] for name in g.names]
        bases = [m.base if type(m) is LoRALinear else m for m in mods]  # as fused_linear unwraps them
        if not all(type(m) is nn.Linear and m.weight.data_ptr() == p for m, p in zip(bases, g.weight_ptrs)):
            continue
        g.onednn_weight(sum(m.weight._version for m in bases))  # the version fused_linear computes
        built += 1
    return built
