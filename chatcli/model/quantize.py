"""Weight-only quantisation of a whole model (``--quantize int8`` / ``int4``): smaller weights, faster decode.

``quantize_model(model, "int8")`` replaces every projection ``nn.Linear`` of the
decoder (q/k/v/o, gate/up/down in each layer) and the LM head with an
:class:`~chatcli.model.int8.Int8Linear` (the maths and the compute paths are
described there), by their Hugging Face names, so LoRA keys still name them.
``quantize_model(model, "int4")`` gives the projections group-wise 4-bit weights
(:class:`~chatcli.model.int4.Int4Linear`, groups of ``group_size`` inputs) and the LM head
int8 by default (``head``; the choice was measured, benchmarks/PERFLOG.md: the head is the
layer whose error shows most in the probabilities, and GGUF Q4 files keep it at 8 bits too).
``blocks`` maps a weight's HF name to GGUF Q4_0/Q4_1 blocks (:class:`~chatcli.model.int4.Q4Blocks`):
with groups of 32 those load as they are, their 4-bit values untouched, instead of being
quantised again from the float weights.

A tied LM head gets its own quantised copy. With an int8 head the tied embedding is then
looked up from that copy's rows (:class:`~chatcli.model.int8_embedding.Int8Embedding`,
``embedding="head"``, the default): the float table is dropped, -113 MB for the default
model, and the lookup reads the very values the head multiplies by; ``embedding="float"``
keeps the float table (what quantisation did before; the quality of both is in
benchmarks/PERFLOG.md). Norms, RoPE, attention and the KV cache keep the model dtype.

Memory: each float weight is quantised a block of rows at a time (a few MB of float
temporaries even for a 49k-row head), and the pages of the rows just read are given back
when they are the checkpoint file's own (:func:`~chatcli.model.page_release.drop_file_pages`):
reading the tied head's table then never holds it whole in memory. The quantised weights of
all layers live in two allocations made up front (bytes and bfloat16 scales, :func:`_storage`),
each layer's buffers views into them: the C heap then only ever holds one layer's temporaries,
reused layer after layer, instead of the weights interleaved with freed temporaries it could
not give back (-13 MB at the default model's int4 peak). The members of a group packing fuses
(q/k/v, gate/up: :data:`FUSED`) lie there as the fused layer's row blocks already, so packing
takes them as they are instead of copying them (+20 MB at the peak when it copied).

On a packed model (:mod:`chatcli.model.packed`) q/k/v and gate/up are also fused into
one quantised matmul each (:func:`~chatcli.model.quant_group.quant_group`); moving the model
(``.to()``) re-packs it and drops that fusion (the layers are then called one by one:
same numbers, a bit slower). Quantising an unpacked model (before the loader packs it,
which is how int4 loads without a float32 peak) leaves the fusing to :func:`pack_model`.
Merging a LoRA adapter into quantised weights and training on them are refused elsewhere
(adapters, fine-tuning): load without ``--quantize`` for those.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn

from chatcli.model.page_release import drop_file_pages, trim_heap
from chatcli.model.int4 import DEFAULT_GROUP_SIZE, GROUP_SIZES, ROW_BLOCK, Int4Linear, Q4Blocks, quantize_int4
from chatcli.model.int8 import Int8Linear, quantize_int8
from chatcli.model.int8_embedding import Int8Embedding
from chatcli.model.packed import pack_model
from chatcli.model.quant_choice import check_quantize

# Projections quantised in each decoder layer (HF names), plus the LM head.
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# What the LM head becomes under each method ("none": it stays float).
HEAD = {"int8": "int8", "int4": "int8"}
# An int8 head recomputes this many largest logits per row exactly (chatcli.model.int8).
HEAD_EXACT_TOP = 64
# Where a tied embedding's lookup reads from once the head is int8: its rows ("head") or a float table.
EMBEDDINGS = ("head", "float")
# Rows of a float weight quantised at a time (quantisation is per row): 1024 rows of the default
# model's head are 2.4 MB of float32 and its few temporaries (4096 rows: +10 MB at the load's peak).
ROWS_AT_ONCE = 1024
# The sibling layers packing fuses into one quantised layer (chatcli.model.packed.pack_model): their
# buffers are laid out as that layer's from the start (see the module docstring).
FUSED = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))
# Each layer's buffers start on a 64-byte boundary in the shared allocations, as torch's own allocations do.
_ALIGN = 64


def quantize_model(
    model: nn.Module, method: str = "int8", *, group_size: int | None = None, head: str | None = None,
    blocks: Mapping[str, Q4Blocks] | None = None, embedding: str = "head",
) -> int:
    """Replace the decoder's projections and LM head by quantised layers in place; returns how many.

    ``none`` changes nothing. The model must not carry LoRA wrappers yet (quantise first,
    then load adapters, which wrap the quantised layers). ``group_size`` (int4 only: 32, 64
    or 128, default 32) and ``head`` ("int8", "int4" or "none", default :data:`HEAD`) choose
    the int4 layout; ``blocks`` are GGUF Q4 weights to take as they are; ``embedding`` where a
    tied embedding is looked up once the head is int8 (see the module docstring).
    """
    method = check_quantize(method)
    if method == "none":
        return 0
    group = DEFAULT_GROUP_SIZE if group_size is None else int(group_size)
    if group not in GROUP_SIZES:
        raise ValueError(f"int4 group size must be one of {', '.join(map(str, GROUP_SIZES))}, got {group_size}")
    head = HEAD[method] if head is None else head
    if head not in ("int8", "int4", "none"):
        raise ValueError(f"the LM head can be int8, int4 or none, got {head!r}")
    if embedding not in EMBEDDINGS:
        raise ValueError(f"the embedding can be looked up from the head's rows or stay float, got {embedding!r}")
    tied = _tied_embedding(model)
    # The quantised weights are allocated outside the C heap (_storage), so free heap pages left by
    # what ran before (the tokenizer's parse: 35 MB for the default model) would stay resident
    # beside them, unused: given back first (a few ms).
    trim_heap()
    targets = quantizable(model)
    kinds = [head if name == "lm_head" else method for *_, name in targets]
    slots = _storage(targets, kinds, group)[::-1]
    targets.reverse()
    kinds.reverse()
    done = 0
    while targets:
        # Popped, so each float layer is freed as soon as it is replaced: a weight still mapped
        # from the checkpoint then unmaps with it, and the float model is never resident whole
        # (holding the list kept every read weight: +420 MB at the peak for the default model's int8).
        (parent, attr, linear, name), kind, slot = targets.pop(), kinds.pop(), slots.pop()
        if kind == "int8":
            new: nn.Module = _int8(linear, slot)
            new.exact_top = HEAD_EXACT_TOP if name == "lm_head" else 0
        elif kind == "int4":
            q4 = blocks.get(f"{name}.weight") if blocks is not None and group == 32 else None
            if q4 is not None and tuple(q4.q.shape) == (linear.out_features, linear.in_features):
                new = Int4Linear.from_q4_blocks(q4.q, q4.d, q4.m, linear.bias, linear.weight.dtype)
            else:
                new = _int4(linear, group)
            _settle(new, slot)
        else:
            continue
        new.to(linear.weight.device)
        parent.register_module(attr, new)  # replaces the child of that name (and drops the float weight)
        del linear
        done += 1
    if tied is not None and embedding == "head" and type(model.lm_head) is Int8Linear:
        parent, attr = tied
        parent.register_module(attr, Int8Embedding(model.lm_head))  # the float table goes with the old module
    if getattr(model, "packed", False):
        # Re-pack from the current modules: float groups whose members are now quantised are
        # dropped, with the packed float storage they kept alive, and quantised groups fused.
        pack_model(model)
    return done


def quantizable(model: nn.Module) -> list[tuple[nn.Module, str, nn.Linear, str]]:
    """(parent, attribute, linear, HF name) of every plain nn.Linear quantisation replaces."""
    out = []
    for name, module in model.named_modules():
        for attr, child in module.named_children():
            full = f"{name}.{attr}" if name else attr
            if type(child) is nn.Linear and (attr in PROJECTIONS or full == "lm_head"):
                out.append((module, attr, child, full))
    return out


def _tied_embedding(model: nn.Module) -> tuple[nn.Module, str] | None:
    """(parent, attribute) of the float embedding the float LM head shares its weight with, or None."""
    body, head = getattr(model, "model", None), getattr(model, "lm_head", None)
    emb = getattr(body, "embed_tokens", None)
    if type(emb) is nn.Embedding and type(head) is nn.Linear and head.weight is emb.weight:
        return body, "embed_tokens"
    return None


def _row_blocks(weight: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor]]:
    """(rows, weight[rows]) in blocks of ROWS_AT_ONCE; each block's file pages are dropped once
    the caller has read it (lossless: see chatcli.model.page_release)."""
    for start in range(0, weight.shape[0], ROWS_AT_ONCE):
        rows = slice(start, start + ROWS_AT_ONCE)
        block = weight[rows]
        yield rows, block
        drop_file_pages(block)


def _int8(linear: nn.Linear, slot: tuple[torch.Tensor, torch.Tensor] | None = None) -> Int8Linear:
    """Int8Linear.from_linear, a block of rows at a time (the same numbers: the scales are per row),
    written into ``slot`` (its weights' and scales' place in :func:`_storage`) when given."""
    w = linear.weight.detach()
    if slot is None:
        slot = (torch.empty(w.shape, dtype=torch.int8, device=w.device),
                torch.empty(w.shape[0], dtype=torch.bfloat16, device=w.device))
    q, s = slot
    blocks = 0
    for rows, block in _row_blocks(w):
        q[rows], s[rows] = quantize_int8(block)
        blocks += 1
    if blocks > 1:  # a large weight (the head): its blocks' float temporaries would stay resident (-7 MB)
        trim_heap()
    return Int8Linear(q, s, linear.bias, w.dtype)


def _int4(linear: nn.Linear, group: int) -> Int4Linear:
    """Int4Linear.from_linear, a block of rows at a time (the same numbers: groups lie within a row)."""
    w = linear.weight.detach()
    n, k = w.shape
    kp = -(-k // group) * group
    q = torch.empty(n, kp, dtype=torch.uint8, device=w.device)
    s = torch.empty(n, kp // group, dtype=torch.bfloat16, device=w.device)
    z = torch.empty_like(s)
    for rows, block in _row_blocks(w):
        q[rows], s[rows], z[rows] = quantize_int4(block, group)
    return Int4Linear.from_parts(q, s, z, linear.bias, w.dtype, linear.in_features, group)


def _storage(targets: Sequence[tuple[nn.Module, str, nn.Linear, str]], kinds: Sequence[str],
             group: int) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
    """Per target, the (weights, scales) views its quantised buffers will be, in two allocations for
    all of them: one of bytes (int8 weights, packed int4 bytes) and one of bfloat16 (int8 scales,
    int4 scales and zeros); None for a target that stays float. Allocated empty, so a page becomes
    resident when the layer written there fills it. Sibling layers of one :data:`FUSED` group that
    are quantised alike lie as the fused layer's row blocks (int4 scales: its [G, Np, 2] columns).
    All None when the targets are not on one device (each layer then allocates its own)."""
    devices = {linear.weight.device for _, _, linear, _ in targets}
    if len(devices) != 1:
        return [None] * len(targets)
    layout: list[tuple[int, int, tuple[int, ...], int, tuple[int, ...], int, int] | None] = []
    sizes = [0, 0]  # elements of the byte and of the bfloat16 allocation
    i = 0
    while i < len(targets):
        run = _run(targets, kinds, i)
        kind, linear = kinds[i], targets[i][2]
        if kind not in ("int8", "int4"):
            layout.append(None)
            i += 1
            continue
        k = linear.in_features
        rows = [targets[j][2].out_features for j in range(i, i + run)]
        if kind == "int4":
            rows = [-(-n // ROW_BLOCK) * ROW_BLOCK for n in rows]  # Int4Linear pads rows to whole blocks
            kp = -(-k // group) * group
            q_shape, s_shape = (sum(rows), kp // 2), (kp // group, sum(rows), 2)
        else:
            q_shape, s_shape = (sum(rows), k), (sum(rows),)
        q_at, s_at = _take(sizes, 0, _numel(q_shape)), _take(sizes, 1, _numel(s_shape))
        start = 0
        for n in rows:
            layout.append((q_at, s_at, q_shape, start, s_shape, n, kind == "int4"))
            start += n
        i += run
    device = devices.pop()
    data = torch.empty(sizes[0], dtype=torch.uint8, device=device)
    scales = torch.empty(sizes[1], dtype=torch.bfloat16, device=device)
    slots: list[tuple[torch.Tensor, torch.Tensor] | None] = []
    for entry, kind in zip(layout, kinds):
        if entry is None:
            slots.append(None)
            continue
        q_at, s_at, q_shape, start, s_shape, n, int4 = entry
        q = data[q_at : q_at + _numel(q_shape)].view(q_shape)[start : start + n]
        s = scales[s_at : s_at + _numel(s_shape)].view(s_shape)
        slots.append((q, s[:, start : start + n]) if int4 else (q.view(torch.int8), s[start : start + n]))
    return slots


def _run(targets: Sequence[tuple[nn.Module, str, nn.Linear, str]], kinds: Sequence[str], i: int) -> int:
    """How many targets from i on are one :data:`FUSED` group quantised alike (1 if none)."""
    parent, attr, linear, _ = targets[i]
    for names in FUSED:
        n = len(names)
        if attr != names[0] or i + n > len(targets):
            continue
        run = targets[i : i + n]
        if ([a for _, a, _, _ in run] == list(names) and all(p is parent for p, *_ in run)
                and len(set(kinds[i : i + n])) == 1 and len({l.in_features for _, _, l, _ in run}) == 1):
            return n
    return 1


def _numel(shape: tuple[int, ...]) -> int:
    out = 1
    for n in shape:
        out *= n
    return out


def _take(sizes: list[int], which: int, n: int) -> int:
    """Reserve n elements of allocation ``which`` (0: bytes, 1: bfloat16) on a 64-byte boundary; their offset."""
    per = _ALIGN // (1 if which == 0 else 2)
    at = -(-sizes[which] // per) * per
    sizes[which] = at + n
    return at


def _settle(layer: Int4Linear, slot: tuple[torch.Tensor, torch.Tensor] | None) -> None:
    """Move a new int4 layer's packed bytes and scales into its ``slot`` of :func:`_storage` (one
    layer's own copy is the temporary; the values are the same)."""
    if slot is None:
        return
    q, sz = slot
    q.copy_(layer.qweight)
    sz.copy_(layer.scales_zeros)
    layer.qweight, layer.scales_zeros = q, sz
