"""Int4 weights: group-wise 4-bit maths, torch's packed layout and :class:`Int4Linear`.

A leaf of the model package like :mod:`chatcli.model.int8`: it knows int4 weights and
nothing of packing groups, LoRA, GGUF files or which layers get quantised
(:mod:`chatcli.model.quantize` picks those; the fused groups are in :mod:`chatcli.model.quant_group`).

The maths, per output row n and group j of ``g`` consecutive inputs (g = 32, 64 or 128)::

    w[n, k] = (q[n, k] - 8) * s[n, j] + z[n, j]      q in 0..15, j = k // g

which is the form torch's CPU kernel ``aten._weight_int4pack_mm_for_cpu`` computes with
(scales and zeros in bfloat16, the activations' dtype). GGUF's Q4_1 block of 32 stores
``w = d * q + m`` (d, m float16): the same q with ``s = d`` and ``z = m + 8 d``; Q4_0
stores ``w = d * (q - 8)``: ``s = d``, ``z = 0``. So a Q4 block maps onto this layout with
its 4-bit values untouched and only ``s`` and ``z`` rounded to bfloat16
(:meth:`Int4Linear.from_q4_blocks`). Float weights are quantised like Q4_1, min/max per
group (:func:`quantize_int4`): Q4_1's ``d = (max - min) / 15`` and ``m = min`` give
``s = bf16(d)``, ``z = bf16(min + 8 d)`` as above, then ``q = round((w - z) / s) + 8``
clipped to 0..15: the error of a weight is at most ``d / 2`` plus the bfloat16 rounding
(``8 |s - d| + |z - (min + 8 d)|``), and weights that were dequantised Q4_1 blocks get their
4-bit values and the direct load's s and z back.

Layout: the kernel reads weights packed two per byte in blocks of output rows whose order
depends on the CPU build (64-row blocks on AVX-512, 32 on AVX2, plain pairs otherwise).
:func:`packing` finds out which once per process by packing a probe with torch's own
``_convert_weight_to_int4pack_for_cpu`` and comparing it with the three known orders;
:func:`pack` / :func:`unpack` then do the same in plain tensor ops (any device, no int32
copy of the weight). Rows are padded to a multiple of 64 and inputs to a multiple of ``g``
(padding rows are zeros and are cut off the output; the input is padded with zeros), so
every block is whole and row blocks of 64 can be sliced out (the fused q/k/v groups).

Compute: for a few rows (decode, batched candidates) the kernel reads the packed weight
directly with bfloat16 activations (float32 activations are ~10x slower in it); the result
is cast back to the model dtype. For more rows (prefill, scoring) the kernel's cost grows
with the rows, so the weight is dequantised for that call and the product runs densely in
the model dtype. Other devices (CUDA, MPS) have no such kernel here: they always dequantise
(correct, not fast). The tolerances the tests hold this to are in ``tests/model/test_int4.py``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F

from chatcli.model.kernel_choice import DEFAULT as DEFAULT_CHOICES
from chatcli.model.qlinear import QuantizedLinear

GROUP_SIZES = (32, 64, 128)
DEFAULT_GROUP_SIZE = 32  # chosen by quality on the default model (benchmarks/PERFLOG.md), and GGUF's Q4 block
ROW_BLOCK = 64  # output rows are padded to this; the packing's largest block of rows
# By default at most this many rows go through the int4 kernel; more rows use a dequantised matmul
# (the kernel re-reads the weight for every 4 rows: its cost grows ~linearly with rows). Each layer
# reads its own ``kernel_max_rows``, set from the model's KernelChoices (measured per CPU by the calibration).
KERNEL_MAX_ROWS = DEFAULT_CHOICES.int4_max_rows
_MID = 8  # q - 8: the kernel's signed view of a 4-bit value
_INT4_MM = getattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu", None)  # None: packing() is None too
# Quantising float weights errs by at most this many steps s, plus 2^-8 |z| (d / 2 and 8 |s - d|
# with |s - d| <= 2^-8 d: bfloat16 keeps 8 significant bits).
ERROR_STEPS = 0.5 + 2**-5 + 2**-8


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


# --------------------------------------------------------------------------- packing


def _pack_as(q: torch.Tensor, block: int, halves: bool) -> torch.Tensor:
    """q uint8 [N, K] (values 0..15, N a multiple of ``block``) -> [N, K / 2] bytes in the order
    of a kernel that reads ``block`` rows at a time: per block and input k, ``block / 2`` bytes
    whose low nibbles hold the first half of the rows and high nibbles the second (``halves``),
    or rows (2i, 2i+1) in byte i (plain pairs)."""
    n, k = q.shape
    b = q.view(n // block, block, k).transpose(1, 2)  # [nb, K, block]
    lo, hi = (b[..., : block // 2], b[..., block // 2 :]) if halves else (b[..., 0::2], b[..., 1::2])
    return (lo | (hi << 4)).contiguous().view(n, k // 2)


def _unpack_as(p: torch.Tensor, block: int, halves: bool) -> torch.Tensor:
    """The inverse of :func:`_pack_as`: bytes [N, K / 2] -> q uint8 [N, K]."""
    n, k = p.shape[0], p.shape[1] * 2
    b = p.reshape(n // block, k, block // 2)
    lo, hi = b & 15, b >> 4
    rows = torch.cat([lo, hi], dim=2) if halves else torch.stack([lo, hi], dim=3).view(n // block, k, block)
    return rows.transpose(1, 2).reshape(n, k)  # [nb, block, K] -> [N, K]


_LAYOUTS = {"avx512": (64, True), "avx2": (32, True), "pairs": (32, False)}


@functools.cache
def packing() -> str | None:
    """Which row order torch's CPU int4 packing uses in this process ("avx512", "avx2",
    "pairs"), or None when it matches none of them (the kernel is then not used: every
    product dequantises). Found once by packing a probe with torch's own op."""
    op = getattr(torch.ops.aten, "_convert_weight_to_int4pack_for_cpu", None)
    if op is None:
        return None
    gen = torch.Generator().manual_seed(0)
    probe = torch.randint(0, 16, (2 * ROW_BLOCK, 64), generator=gen, dtype=torch.int32)
    try:
        want = op(probe, 1)
    except RuntimeError:
        return None
    q = probe.to(torch.uint8)
    for name, (block, halves) in _LAYOUTS.items():
        if want.dtype == torch.uint8 and want.shape == (q.shape[0], q.shape[1] // 2) and torch.equal(
            _pack_as(q, block, halves), want
        ):
            return name
    return None


def pack(q: torch.Tensor) -> torch.Tensor:
    """4-bit values q uint8 [N, K] (N a multiple of 64, K even) -> the kernel's packed bytes [N, K / 2]."""
    block, halves = _LAYOUTS[packing() or "pairs"]
    return _pack_as(q, block, halves)


def unpack(p: torch.Tensor) -> torch.Tensor:
    """Packed bytes [N, K / 2] -> 4-bit values uint8 [N, K] (the inverse of :func:`pack`)."""
    block, halves = _LAYOUTS[packing() or "pairs"]
    return _unpack_as(p, block, halves)


# --------------------------------------------------------------------------- the maths


class Q4Blocks(NamedTuple):
    """One weight's GGUF Q4_0 / Q4_1 blocks of 32 inputs, unpacked: q uint8 [N, K] (0..15),
    d [N, K / 32] and m [N, K / 32] (None for Q4_0), as float tensors."""

    q: torch.Tensor
    d: torch.Tensor
    m: torch.Tensor | None


def q4_scales(d: torch.Tensor, m: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, z) bf16 of GGUF Q4 blocks: Q4_1 (``w = d q + m``): s = d, z = m + 8 d; Q4_0
    (``w = d (q - 8)``, m None): s = d, z = 0. d, m: float [N, G], from float16."""
    d = d.float()
    s = d.to(torch.bfloat16)
    z = torch.zeros_like(s) if m is None else (m.float() + _MID * d).to(torch.bfloat16)
    return s, z


def quantize_int4(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group-wise min/max 4-bit (as Q4_1): W [N, K] -> (q uint8 [N, Kp], s bf16 [N, G], z bf16 [N, G]),
    ``W ~= (q - 8) * s + z`` per group, with Kp = G * group_size >= K. The inputs past K (padding)
    repeat the row's last weight, so they change no group's min or max."""
    w = weight.detach().float()
    n, k = w.shape
    kp = _round_up(k, group_size)
    if kp != k:
        w = torch.cat([w, w[:, -1:].expand(n, kp - k)], dim=1)
    wg = w.view(n, kp // group_size, group_size)  # [N, G, g]
    lo, hi = wg.amin(dim=2), wg.amax(dim=2)  # [N, G]
    d = (hi - lo) / 15
    s, z = q4_scales(d, lo)  # Q4_1's d and m = min, rounded as a GGUF block's are
    flat = s == 0  # a constant group: q = 8, w = z
    step = torch.where(flat, torch.ones_like(s), s).float()
    q = torch.round((wg - z.float()[..., None]) / step[..., None]) + _MID
    q = torch.where(flat[..., None], torch.full_like(q, _MID), q.clamp_(0, 15))
    return q.to(torch.uint8).view(n, kp), s, z


# --------------------------------------------------------------------------- the layer


class Int4Linear(QuantizedLinear):
    """A frozen linear layer with group-wise int4 weights (see the module docstring).

    Buffers: ``qweight`` uint8 [Np, Kp / 2] (packed, Np = out rounded up to 64, Kp = in rounded
    up to the group size) and ``scales_zeros`` bf16 [G, Np, 2] (the kernel's layout: s and z
    per group and row). ``weight`` is a float copy dequantised on each access, for reading.
    """

    method = "int4"

    def __init__(self, qweight: torch.Tensor, scales_zeros: torch.Tensor, bias: torch.Tensor | None,
                 dtype: torch.dtype, in_features: int, out_features: int, group_size: int):
        super().__init__()
        if group_size not in GROUP_SIZES:
            raise ValueError(f"int4 group size must be one of {GROUP_SIZES}, got {group_size}")
        np_, kp = _round_up(out_features, ROW_BLOCK), _round_up(in_features, group_size)
        if qweight.dtype != torch.uint8 or tuple(qweight.shape) != (np_, kp // 2) or \
                tuple(scales_zeros.shape) != (kp // group_size, np_, 2):
            raise ValueError(f"Int4Linear({in_features} -> {out_features}, group {group_size}) needs uint8 "
                             f"[{np_}, {kp // 2}] and [{kp // group_size}, {np_}, 2] scales, got {qweight.dtype} "
                             f"{tuple(qweight.shape)} and {tuple(scales_zeros.shape)}")
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.register_buffer("qweight", qweight)
        self.register_buffer("scales_zeros", scales_zeros.to(torch.bfloat16))
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().to(dtype), requires_grad=False)
        self.compute_dtype = dtype
        self.kernel_max_rows = KERNEL_MAX_ROWS  # set from the model's KernelChoices (packed.use_kernel_choices)
        self._kernel_facts()

    def _kernel_facts(self) -> None:
        # What forward would otherwise ask on every call (a decode step makes 120 int4 calls per token,
        # each Python check and no-op tensor call costing about a microsecond): computed at build and
        # again after a move (_apply). Whether the CPU kernel can serve this layer at all, the zero
        # columns its input needs (in_features up to a whole group) and whether the output has padding
        # rows to cut off.
        self.kernel_ok = self.qweight.device.type == "cpu" and packing() is not None
        self.pad_in = self.qweight.shape[1] * 2 - self.in_features
        self.cut_out = self.qweight.shape[0] != self.out_features

    # --- building ------------------------------------------------------------

    @classmethod
    def from_parts(cls, q: torch.Tensor, s: torch.Tensor, z: torch.Tensor, bias: torch.Tensor | None,
                   dtype: torch.dtype, in_features: int, group_size: int) -> "Int4Linear":
        """From 4-bit values q uint8 [N, Kp] and s, z bf16 [N, G] (unpadded rows)."""
        n, kp = q.shape
        np_ = _round_up(n, ROW_BLOCK)
        if np_ != n:  # padding rows: q = 8, s = z = 0, so they compute zeros (and are cut off)
            q = torch.cat([q, q.new_full((np_ - n, kp), _MID)])
            s, z = (torch.cat([t, t.new_zeros(np_ - n, t.shape[1])]) for t in (s, z))
        sz = torch.stack([s.t(), z.t()], dim=2).to(torch.bfloat16).contiguous()  # [G, Np, 2]
        return cls(pack(q.contiguous()), sz, bias, dtype, in_features, n, group_size)

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, group_size: int = DEFAULT_GROUP_SIZE) -> "Int4Linear":
        q, s, z = quantize_int4(linear.weight, group_size)
        return cls.from_parts(q, s, z, linear.bias, linear.weight.dtype, linear.in_features, group_size)

    @classmethod
    def from_q4_blocks(cls, q: torch.Tensor, d: torch.Tensor, m: torch.Tensor | None, bias: torch.Tensor | None,
                       dtype: torch.dtype) -> "Int4Linear":
        """From GGUF Q4_0 / Q4_1 blocks of 32, their 4-bit values kept: q uint8 [N, K] (0..15),
        d and m [N, K / 32] (m None for Q4_0); see :func:`q4_scales`."""
        s, z = q4_scales(d, m)
        return cls.from_parts(q, s, z, bias, dtype, q.shape[1], 32)

    # --- reading -------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.qweight.device

    @property
    def padded_out(self) -> int:
        return self.qweight.shape[0]

    def parts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(q uint8 [N, Kp], s, z bf16 [N, G]) without the padding rows."""
        n = self.out_features
        q = unpack(self.qweight)[:n]
        return q, self.scales_zeros[:, :n, 0].t(), self.scales_zeros[:, :n, 1].t()

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """(q - 8) * s + z [out, in] in ``dtype`` (default: the compute dtype), computed in float32
        from the stored bfloat16 s and z: the weight the kernel computes with."""
        q, s, z = self.parts()
        n, g = self.out_features, self.group_size
        # In place on one float32 copy (the same roundings as (q - 8) * s + z): a prefill dequantises
        # each layer per call, and three temporaries of the fused gate/up were +14 MB at its peak.
        w = q.view(n, -1, g).float()  # [N, G, g]
        w.sub_(_MID).mul_(s.float()[..., None]).add_(z.float()[..., None])
        return w.view(n, -1)[:, : self.in_features].to(dtype or self.compute_dtype)

    def matches(self, weight: torch.Tensor) -> bool:
        """Whether ``weight`` lies within half a step, plus the bfloat16 rounding of s and z (see
        the module docstring), of this layer's weights everywhere: what quantising it, or the GGUF
        blocks it came from, gives."""
        w = weight.detach().to(device=self.device, dtype=torch.float32)
        if tuple(w.shape) != (self.out_features, self.in_features):
            return False
        _, s, z = self.parts()
        g = self.group_size
        slack = (ERROR_STEPS * s.float() + z.float().abs() * 2**-8 + 1e-6).repeat_interleave(g, dim=1)
        return bool(((self.dequantize(torch.float32) - w).abs() <= slack[:, : self.in_features]).all())

    # --- computing -----------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., K] -> y: [..., N] in x's dtype. The kernel path is the few ops it needs, each in its
        # cheapest spelling (a decode step makes 120 of these calls per token, and on a small model the
        # Python around them costs about as much as the kernels): a reshape, the cast to bfloat16, the
        # kernel, the cast back (.float(), not .to(): a microsecond less per call) and a view; the cut of
        # padding rows, the input padding and the bias only where the layer has them.
        rows = x.numel() // self.in_features
        if self.kernel_ok and 0 < rows <= self.kernel_max_rows:
            y = self.kernel(x.reshape(rows, self.in_features))  # [M, Np] bfloat16
            if self.cut_out:
                y = y[:, : self.out_features]
            dtype = x.dtype
            if dtype is torch.float32:
                y = y.float()
            elif dtype is not torch.bfloat16:
                y = y.to(dtype=dtype)
            y = y.view(*x.shape[:-1], self.out_features)
            return y if self.bias is None else y + self.bias.to(dtype)
        return F.linear(x, self.dequantize(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def kernel(self, x2: torch.Tensor) -> torch.Tensor:
        """x2 [M, in] -> [M, Np] bfloat16 through torch's int4 kernel (padding columns included)."""
        if x2.dtype is not torch.bfloat16:
            x2 = x2.bfloat16()
        if self.pad_in:
            x2 = F.pad(x2, (0, self.pad_in))
        buffers = self._buffers  # read directly: a buffer read through Module.__getattr__ costs ~0.8 us
        sz = buffers["scales_zeros"]
        if not sz.is_contiguous():  # a fused group's member holds a strided view: made contiguous per call
            sz = sz.contiguous()
        return _INT4_MM(x2.contiguous(), buffers["qweight"], self.group_size, sz)

    def _apply(self, fn, recurse: bool = True):
        # .to(dtype) must not turn the packed bytes or bfloat16 scales into floats: only the device follows.
        q, sz = self.qweight, self.scales_zeros
        out = super()._apply(fn, recurse)
        probe = fn(torch.empty(0, dtype=self.compute_dtype, device=q.device))
        self.qweight = q.to(probe.device)
        self.scales_zeros = sz.to(probe.device)
        if probe.dtype.is_floating_point:
            self.compute_dtype = probe.dtype
        self._kernel_facts()
        return out

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"int4 group {self.group_size}")
