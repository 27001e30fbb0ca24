"""Int8 weights: the per-channel maths and :class:`Int8Linear`, the layer that holds them.

A leaf of the model package (its base class, :class:`~chatcli.model.qlinear.QuantizedLinear`,
is shared with int4): it knows int8 weights and nothing of packing, LoRA or
which layers get quantised (:mod:`chatcli.model.quantize` picks those; the fused int8
groups are in :mod:`chatcli.model.quant_group`).

The maths, per output channel n (symmetric, no zero point)::

    s_n = bf16_up(max_k |W[n, k]| / 127)      # rounded *up* to a bfloat16 value
    Q[n, k] = round(W[n, k] / s_n)             # in [-127, 127], never clipped
    y = x · (Q · s)^T + b

``s_n`` is chosen representable in bfloat16 because the CPU kernel takes bfloat16
scales: a float32 scale rounded afterwards would shift a whole row by up to 2^-9,
while this way ``Q · s`` is exactly the weight the kernel uses. The rounding error
per weight is at most s_n / 2 (about 0.4 % of the row's largest weight).

Compute: for a few rows (decode, batched candidates) ``torch.ops.aten._weight_int8pack_mm``
reads the int8 weight directly; its vectorised x86 path wants bfloat16 activations
(float32 activations are ~13x slower), so x is cast to bfloat16 around the kernel and
the result back to the model dtype: the int8 path adds bfloat16 rounding of the layer's
input and output. For many rows (prefill, scoring) the kernel is slower than a dense
matmul, so the weight is dequantised for that call and the product runs in the model
dtype (exactly ``x · (Q·s)^T``, float32 activations in a float32 model).
The tolerance the tests hold this to is documented in ``tests/model/test_quantize.py``.

An LM head (``exact_top`` > 0, set by :func:`chatcli.model.quantize.quantize_model`) also
recomputes its ``exact_top`` largest outputs per row in float32 after the kernel: the kernel's
bfloat16 output rounds logits of 8-16 by up to 0.03, which moves a probability by up to 3 %
and swapped the default model's first answer token (The 15.2 % vs L 14.0 % in float32 came
out 14.7 % each). The tokens anyone reads or samples then carry the int8 weights' exact
logits; the rest keep the kernel's (their total probability changes by far less than 1 %).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from chatcli.model.kernel_choice import DEFAULT as DEFAULT_CHOICES
from chatcli.model.qlinear import QuantizedLinear, float_dtype_device, is_quantized, weight_shape

__all__ = ["Int8Linear", "quantize_int8", "float_dtype_device", "is_quantized", "weight_shape"]  # helpers re-exported

# By default at most this many rows go through the int8 kernel; more rows use a dequantised matmul
# (the kernel's cost grows ~linearly with rows). Each layer reads its own ``kernel_max_rows``,
# which the model's KernelChoices set (chatcli.model.kernel_choice; measured per CPU by the calibration).
KERNEL_MAX_ROWS = DEFAULT_CHOICES.int8_max_rows
_KERNEL_DEVICES = ("cpu",)
# The kernel's vectorised loop reads K in blocks of 16 and returns wrong numbers (or crashes)
# for other input widths (measured with torch 2.13); such layers use the dequantised matmul.
KERNEL_K_MULTIPLE = 16
_INT8_MM = torch.ops.aten._weight_int8pack_mm


# Rows quantised at a time: the float temporaries stay a few MB even for a 49k-row LM head
# (whole, they held three float32 copies of it: +340 MB peak for the default model's).
_ROWS_AT_ONCE = 4096


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric int8: W [N, K] -> (Q int8 [N, K], s bfloat16 [N]), W ~= Q * s."""
    w0 = weight.detach()
    q = torch.empty(w0.shape, dtype=torch.int8, device=w0.device)
    s = torch.empty(w0.shape[0], dtype=torch.bfloat16, device=w0.device)
    for start in range(0, w0.shape[0], _ROWS_AT_ONCE):
        rows = slice(start, start + _ROWS_AT_ONCE)
        w = w0[rows].float()
        amax = w.abs().amax(dim=1).clamp(min=1e-12)  # an all-zero row gets a tiny scale, Q = 0
        exact = amax / 127
        sb = exact.to(torch.bfloat16)
        # Round up to the next bfloat16 (one more unit in the last place: positive values' bits
        # order like integers), so no weight lands outside [-127, 127].
        s[rows] = torch.where(sb.float() < exact, (sb.view(torch.int16) + 1).view(torch.bfloat16), sb)
        q[rows] = torch.round(w / s[rows].float()[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, s


class Int8Linear(QuantizedLinear):
    """A frozen linear layer with int8 weights and per-output-channel bfloat16 scales.

    Answers like the ``nn.Linear`` it replaced (``in_features``, ``out_features``,
    ``bias``, ``forward``); ``dtype``/``device`` are the float dtype it computes in and
    where it lives. ``weight`` is a float copy dequantised on each access, for reading
    (shape checks, exports): writing to it changes nothing, so merging a LoRA adapter
    into an int8 layer is refused by the adapter code.
    """

    method = "int8"

    def __init__(self, qweight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype):
        super().__init__()
        if qweight.dtype != torch.int8 or qweight.dim() != 2 or scales.shape != (qweight.shape[0],):
            raise ValueError(f"Int8Linear needs int8 [N, K] weights and [N] scales, got {qweight.dtype} "
                             f"{tuple(qweight.shape)} and {tuple(scales.shape)}")
        self.out_features, self.in_features = (int(n) for n in qweight.shape)
        self.register_buffer("qweight", qweight)  # [N, K] int8
        self.register_buffer("scales", scales.to(torch.bfloat16))  # [N]
        self.bias = None if bias is None else nn.Parameter(bias.detach().to(dtype), requires_grad=False)
        self.compute_dtype = dtype
        self.use_kernel = self.in_features % KERNEL_K_MULTIPLE == 0
        self.kernel_max_rows = KERNEL_MAX_ROWS  # set from the model's KernelChoices (packed.use_kernel_choices)
        self.exact_top = 0  # > 0 on an LM head: see the module docstring
        self._kernel_facts()

    def _kernel_facts(self) -> None:
        # Whether the kernel can serve this layer at all (its input width, its device): asked once at
        # build and after a move (_apply), not on every call of a decode step.
        self.kernel_ok = self.use_kernel and self.qweight.device.type in _KERNEL_DEVICES

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        q, s = quantize_int8(linear.weight)
        return cls(q, s, linear.bias, linear.weight.dtype)

    @property
    def device(self) -> torch.device:
        return self.qweight.device

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Q * s [N, K] in ``dtype`` (default: the compute dtype); exact in float32."""
        w = self.qweight.float()
        w.mul_(self.scales.float()[:, None])  # in place: one float32 copy (113 MB for the default model's head)
        return w.to(dtype or self.compute_dtype)

    def matches(self, weight: torch.Tensor) -> bool:
        """Same float weights quantise to the same int8 weights and scales (exactly)."""
        q, s = quantize_int8(weight.to(device=self.device, dtype=self.dtype))
        return torch.equal(q, self.qweight) and torch.equal(s, self.scales)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., K] -> y: [..., N] in x's dtype. The kernel path is the few ops it needs, each in its
        # cheapest spelling (as Int4Linear.forward): a reshape, the cast to bfloat16, the kernel, the cast
        # back and a view; the head's exact top and the bias where there are some.
        rows = x.numel() // self.in_features
        if self.kernel_ok and 0 < rows <= self.kernel_max_rows:
            x2 = x.reshape(rows, self.in_features)  # [M, K]
            xb = x2 if x2.dtype is torch.bfloat16 else x2.bfloat16()
            buffers = self._buffers  # read directly: a buffer read through Module.__getattr__ costs ~0.8 us
            y = _INT8_MM(xb.contiguous(), buffers["qweight"], buffers["scales"])  # [M, N] bfloat16
            dtype = x.dtype
            if dtype is not torch.bfloat16:
                y = y.float() if dtype is torch.float32 else y.to(dtype=dtype)
                if self.exact_top:
                    y = self._exact_top(x2, y)
            y = y.view(*x.shape[:-1], self.out_features)
            return y if self.bias is None else y + self.bias.to(dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantize(x.dtype), bias)

    def _exact_top(self, x2: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """y [M, N] with each row's ``exact_top`` largest entries recomputed from x2 [M, K] and the
        int8 weights in x2's dtype (a gather of those rows: ~37 kB for 64 of the default model's)."""
        idx = y.topk(min(self.exact_top, self.out_features), dim=-1).indices  # [M, T]
        flat = idx.view(-1)  # index_select: the same rows as advanced indexing, a few microseconds less
        buffers = self._buffers
        w = buffers["qweight"].index_select(0, flat).to(x2.dtype).view(*idx.shape, -1)  # [M, T, K]
        w.mul_(buffers["scales"].index_select(0, flat).to(x2.dtype).view(*idx.shape, 1))
        exact = torch.bmm(w, x2[:, :, None]).squeeze(-1)  # [M, T]
        return y.scatter_(-1, idx, exact)

    def _apply(self, fn, recurse: bool = True):
        # .to(dtype) must not turn int8 weights or bfloat16 scales into floats: only the device follows.
        q, s = self.qweight, self.scales
        out = super()._apply(fn, recurse)
        probe = fn(torch.empty(0, dtype=self.compute_dtype, device=q.device))
        self.qweight = q.to(probe.device)
        self.scales = s.to(probe.device)
        if probe.dtype.is_floating_point:
            self.compute_dtype = probe.dtype
        self._kernel_facts()
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, int8"

