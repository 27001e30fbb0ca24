"""Quantised q/k/v and gate/up fused as row blocks of one int8 or int4 layer (one kernel call per group).

:func:`quant_group` (called by :func:`chatcli.model.packed.pack_model` when the members are
quantised) builds an :class:`Int8Group` or :class:`Int4Group` from sibling
:class:`~chatcli.model.int8.Int8Linear` / :class:`~chatcli.model.int4.Int4Linear` layers of one
parent, or returns None when they cannot be fused (mixed kinds, widths, dtypes or biases). The
members stay registered modules whose buffers become views into the fused layer's buffers (no
memory doubled), so each still runs on its own, LoRA wraps it, and state_dict keys are unchanged.

:meth:`QuantGroup.run` (called through :func:`chatcli.model.packed.fused_linear`) gives each
member's output from one call of the fused layer, or None when a member is no longer the view it
was (replaced, moved): the caller then calls the modules one by one (never wrong, only slower).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from chatcli.model.int4 import Int4Linear
from chatcli.model.int8 import Int8Linear
from chatcli.model.lora_linear import LoRALinear


class QuantGroup:
    """Quantised layers ``names`` of one parent whose weights are row blocks of one fused layer.

    q/k/v (and gate/up) then run as one kernel call instead of three (two): fewer calls
    per token. The members stay quantised modules whose buffers are views into the
    fused ones (no memory doubled), so each still works on its own and LoRA wraps it.
    ``run`` (called through :func:`~chatcli.model.packed.fused_linear`) returns None when a member is no
    longer the view it was (replaced, moved): the caller then calls the modules one by one.
    Member i's output is columns ``starts[i] : starts[i] + sizes[i]`` of the fused output.
    """

    member_type: type = nn.Module

    def __init__(self, fused: nn.Module, names: Sequence[str], sizes: Sequence[int], starts: Sequence[int],
                 members: Sequence[nn.Module]):
        self.fused = fused
        self.names = tuple(names)
        self.sizes = tuple(sizes)
        self.starts = tuple(starts)
        self.ptrs = tuple(fused.qweight[s].data_ptr() for s in self.starts)
        # The plain case, checked by identity (a few attribute reads, no tensor calls): each name still
        # holds the member packed here and that member still holds the weight view packed here.
        self.packed = tuple((name, m, m.qweight) for name, m in zip(self.names, members))
        # The fused output cut into the members' columns by one split: pieces of ``sizes`` and of the
        # padding rows between and after them (int4 pads each member to 64 rows), the members at ``keep``.
        pieces, keep, col = [], [], 0
        for s, n in zip(self.starts, self.sizes):
            if s > col:
                pieces.append(s - col)
            keep.append(len(pieces))
            pieces.append(n)
            col = s + n
        if fused.out_features > col:
            pieces.append(fused.out_features - col)
        self.pieces, self.keep = tuple(pieces), tuple(keep)

    @classmethod
    def members(cls, parent: nn.Module, names: Sequence[str]) -> list[nn.Module] | None:
        """The modules ``names`` when they can be fused: all of this group's type, same input
        width and dtype, and either all or none with a bias; else None."""
        mods = [getattr(parent, n) for n in names]
        if not all(type(m) is cls.member_type for m in mods) or len({(m.in_features, m.dtype) for m in mods}) != 1:
            return None
        if any(m.bias is not None for m in mods) and not all(m.bias is not None for m in mods):
            return None
        return mods

    def run(self, parent: nn.Module, x: torch.Tensor) -> list[torch.Tensor] | None:
        """Each member's output [..., o_i] for x [..., K] from one quantised matmul, or None."""
        modules = parent._modules
        for name, m, q in self.packed:
            if modules[name] is not m or m._buffers["qweight"] is not q:
                return self._run_checked(parent, x)
        # Every member is the plain layer packed here: no LoRA side path writes into the outputs, so
        # one split gives them (views, like narrow's) and the fused layer is called without the module
        # call's hook machinery (it is no registered module: nothing can hook it).
        parts = self.fused.forward(x).split_with_sizes(self.pieces, -1)
        return [parts[i] for i in self.keep]

    def _run_checked(self, parent: nn.Module, x: torch.Tensor) -> list[torch.Tensor] | None:
        """:meth:`run` when a member was wrapped (LoRA) or replaced: by pointer, as the modules now are."""
        loras = []
        for name, ptr in zip(self.names, self.ptrs):
            m = parent._modules[name]
            lora = m if type(m) is LoRALinear else None
            base = m.base if lora is not None else m
            if type(base) is not self.member_type or base.qweight.data_ptr() != ptr:
                return None
            loras.append(lora)
        y = self.fused(x)  # [..., O_total]
        outs = [y.narrow(-1, s, n) for s, n in zip(self.starts, self.sizes)]
        return [out if lora is None else lora.add_side(x, out) for out, lora in zip(outs, loras)]


class Int8Group(QuantGroup):
    """Int8 layers fused as row blocks of one :class:`~chatcli.model.int8.Int8Linear`."""

    member_type = Int8Linear

    @classmethod
    def pack(cls, parent: nn.Module, names: Sequence[str]) -> "Int8Group | None":
        mods = cls.members(parent, names)
        if mods is None:
            return None
        q = _joined([m.qweight for m in mods], 0)  # [O_total, K]
        s = _joined([m.scales for m in mods], 0)  # [O_total]
        b = torch.cat([m.bias.detach() for m in mods]) if mods[0].bias is not None else None
        fused = Int8Linear(q, s, b, mods[0].dtype)
        start = 0
        for m in mods:  # members become row views of the fused buffers (rows of [N, K] stay contiguous)
            o = m.out_features
            m.qweight = fused.qweight[start : start + o]
            m.scales = fused.scales[start : start + o]
            if b is not None:
                m.bias = nn.Parameter(fused.bias.detach()[start : start + o], requires_grad=False)
            start += o
        sizes = [m.out_features for m in mods]
        return cls(fused, names, sizes, [sum(sizes[:i]) for i in range(len(sizes))], mods)


class Int4Group(QuantGroup):
    """Int4 layers fused as row blocks of one :class:`~chatcli.model.int4.Int4Linear`.

    Each member keeps its rows padded to a multiple of 64 (whole blocks of the packed
    layout), so the fused weight is the members' packed bytes one after the other and
    every member stays a view; the padding columns of the fused output are skipped.
    A member called on its own copies its slice of the scales per call (a few kB)."""

    member_type = Int4Linear

    @classmethod
    def pack(cls, parent: nn.Module, names: Sequence[str]) -> "Int4Group | None":
        mods = cls.members(parent, names)
        if mods is None or len({m.group_size for m in mods}) != 1:
            return None
        q = _joined([m.qweight for m in mods], 0)  # [Np_total, Kp / 2]
        sz = _joined([m.scales_zeros for m in mods], 1)  # [G, Np_total, 2]
        b = None
        if mods[0].bias is not None:  # each member's bias padded to its padded rows
            b = torch.cat([F.pad(m.bias.detach(), (0, m.padded_out - m.out_features)) for m in mods])
        fused = Int4Linear(q, sz, b, mods[0].dtype, mods[0].in_features, q.shape[0], mods[0].group_size)
        starts, start = [], 0
        for m in mods:
            o = m.padded_out
            m.qweight = fused.qweight[start : start + o]
            m.scales_zeros = fused.scales_zeros[:, start : start + o]
            if b is not None:
                m.bias = nn.Parameter(fused.bias.detach()[start : start + m.out_features], requires_grad=False)
            starts.append(start)
            start += o
        return cls(fused, names, [m.out_features for m in mods], starts, mods)


def _joined(parts: Sequence[torch.Tensor], dim: int) -> torch.Tensor:
    """``torch.cat(parts, dim)``; without a copy when the parts already lie one after another along
    ``dim`` in one contiguous tensor (quantising lays a group's members out so: chatcli.model.quantize),
    which is then returned as a view of their memory."""
    first = parts[0]
    shape = list(first.shape)
    shape[dim] = sum(p.shape[dim] for p in parts)
    storage = first.untyped_storage()
    span = first.storage_offset() + sum((n - 1) * st for n, st in zip(shape, first.stride())) + 1
    alike = all(p.untyped_storage().data_ptr() == storage.data_ptr() and p.dtype == first.dtype
                and p.stride() == first.stride() and p.shape[:dim] + p.shape[dim + 1 :] ==
                first.shape[:dim] + first.shape[dim + 1 :] for p in parts)
    if alike and span * first.element_size() <= storage.nbytes():
        whole = first.as_strided(shape, first.stride(), first.storage_offset())
        start = 0
        for p in parts:
            if whole.narrow(dim, start, p.shape[dim]).data_ptr() != p.data_ptr():
                break
            start += p.shape[dim]
        else:
            if whole.is_contiguous():
                return whole
    return torch.cat(parts, dim)


def quant_group(parent: nn.Module, names: Sequence[str]) -> QuantGroup | None:
    """The fused int8 or int4 group of ``names`` (None when they are not all of one quantised kind)."""
    return Int8Group.pack(parent, names) or Int4Group.pack(parent, names)
