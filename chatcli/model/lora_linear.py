"""LoRA layers that wrap the model's own modules: hot-swappable, stackable, mergeable.

:class:`LoRALinear` wraps a frozen ``nn.Linear`` (kept as ``.base``, the very same
module object, its weight never replaced) and holds any number of named adapters::

    y = W0·x + b + Σ_i  on_i · s_i · c_i · B_i · A_i · x

    A_i: [r_i, in]   B_i: [out, r_i]   c_i = alpha_i / r_i   (rsLoRA: alpha_i / sqrt(r_i))
    s_i: the user's live scale (any finite number; 0 = this adapter does nothing)
    on_i: the on/off switch

Inference folds every active adapter into one pair ``A_cat = [A_1; A_2; ...]``
([R, in], R = Σ r_i) and ``B_cat = [s_1·c_1·B_1, s_2·c_2·B_2, ...]`` ([out, R]), so
any number of stacked adapters costs two thin matmuls per layer; the fused pair is
rebuilt lazily after any change. With no active adapter the forward is exactly
``base(x)`` (bit-for-bit the base model). While gradients flow through adapter
parameters (training) each adapter runs on its own so autograd sees A and B.

Precision: A and B are stored in the base dtype, except float32 A/B on a bf16/fp16
base, which stay float32 — fine-tuning's trainable master weights (a bf16 A/B would
round away small optimizer updates: bf16 keeps 8 mantissa bits, so an update under
~1/256 of a weight vanishes). This is the simpler of the two correct designs: no
separate master copy to sync each step; the training path casts x to float32 for the
low-rank product (an [N, r] intermediate, cheap) and casts the result back to the
base dtype, so autograd gives float32 gradients to A/B and AdamW updates them in
float32, while the frozen base stays bf16. Inference (the fused pair) is built in the
base dtype from such A/B, so a float32 adapter on a bf16 base runs at bf16 speed.

Merging adds ``s·c·B·A`` into ``W0`` in place (the adapter then costs nothing per
token); unmerging subtracts the same product, which restores W0 within float
rounding. An adapter that was never merged leaves W0 untouched, so unloading it
restores the base model bit-exactly.

:class:`ReplacedModule` is PEFT's ``modules_to_save`` for ``lm_head`` and
``embed_tokens``: an adapter may bring a full replacement weight, used instead of
the base weight while the adapter is on. Its scale interpolates the outputs,
``base + s·(replaced − base)``: 1 is exactly the replacement, 0 exactly the base.
When several active adapters replace the same module, the last one loaded wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from chatcli.model.training.dropout_mask import dropped
from chatcli.model.qlinear import QuantizedEmbedding, QuantizedLinear, float_dtype_device, weight_shape


def lora_scaling(r: int, alpha: float, rslora: bool = False) -> float:
    """c = alpha / r, or alpha / sqrt(r) for rank-stabilised LoRA (PEFT's ``use_rslora``)."""
    return alpha / math.sqrt(r) if rslora else alpha / r


class LoRAPair:
    """One adapter's A [r, in] and B [out, r] for one linear layer, with its switches.

    A plain object, not a module: the layer that holds it registers A and B as its
    parameters (``lora_A__<name>``), so there is one module per wrapped layer (module
    creation dominates load time on a model with hundreds of linear layers)."""

    def __init__(self, A: torch.Tensor, B: torch.Tensor, alpha: float, rslora: bool = False, scale: float = 1.0):
        if A.dim() != 2 or B.dim() != 2 or A.shape[0] != B.shape[1]:
            raise ValueError(f"LoRA A {tuple(A.shape)} and B {tuple(B.shape)} do not form B·A")
        self.A = nn.Parameter(A, requires_grad=False)
        self.B = nn.Parameter(B, requires_grad=False)
        self.r = int(A.shape[0])
        self.alpha = float(alpha)
        self.rslora = rslora
        self.scaling = lora_scaling(self.r, self.alpha, rslora)  # c
        self.scale = float(scale)  # s, the live user scale
        self.enabled = True
        self.merged_scale: float | None = None  # s at merge time; None = not merged
        self.dropout = 0.0  # LoRA dropout on x, applied only while training (fine-tuning sets it)

    @property
    def merged(self) -> bool:
        return self.merged_scale is not None

    @property
    def active(self) -> bool:
        """Contributes through the side path (on, not merged, non-zero scale)."""
        return self.enabled and not self.merged and self.scale != 0.0

    def delta(self, scale: float | None = None) -> torch.Tensor:
        """s·c·B·A [out, in] in float32 (the weight change this adapter stands for)."""
        s = self.scale if scale is None else scale
        return (self.B.detach().float() @ self.A.detach().float()) * (s * self.scaling)

    def __repr__(self) -> str:
        return f"LoRAPair(r={self.r}, alpha={self.alpha:g}, scale={self.scale:g}, on={self.enabled}, merged={self.merged})"


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` (or quantised int8/int4 :class:`~chatcli.model.qlinear.QuantizedLinear`)
    plus named LoRA adapters (see the module docstring for the maths). On a quantised base the
    low-rank side path runs in the float compute dtype; merging into quantised weights is refused."""

    def __init__(self, base: nn.Linear | QuantizedLinear):
        super().__init__()
        if not isinstance(base, (nn.Linear, QuantizedLinear)):
            raise TypeError(f"LoRALinear wraps nn.Linear or a quantised linear, got {type(base).__name__}")
        self.base = base
        self.lora: dict[str, LoRAPair] = {}  # name -> pair, in load order
        self._fused: tuple[torch.Tensor, torch.Tensor] | None = None  # (A_cat [R, in], B_cat [out, R])
        self._fused_valid = False
        self._versions: tuple[int, ...] = ()

    # The wrapper answers for the layer it wraps (shape queries, DecoderLM.dtype, ...).
    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    # --- adapters ------------------------------------------------------------

    def add(self, name: str, pair: LoRAPair) -> None:
        if name in self.lora:
            raise ValueError(f"adapter {name!r} already on this layer")
        if pair.A.shape[1] != self.in_features or pair.B.shape[0] != self.out_features:
            raise ValueError(
                f"adapter {name!r} shapes A {tuple(pair.A.shape)} B {tuple(pair.B.shape)} do not fit "
                f"Linear({self.in_features} -> {self.out_features})"
            )
        wd, dev = float_dtype_device(self.base)
        for t in (pair.A, pair.B):
            # float32 A/B on a bf16/fp16 base stay float32 (trainable master weights, see the
            # module docstring); any other dtype follows the base weight.
            keep = t.dtype == torch.float32 and wd in (torch.bfloat16, torch.float16)
            dtype = t.dtype if keep else wd
            if t.device != dev or t.dtype != dtype:
                t.data = t.data.to(device=dev, dtype=dtype)
        self.register_parameter(f"lora_A__{name}", pair.A)
        self.register_parameter(f"lora_B__{name}", pair.B)
        self.lora[name] = pair
        self.invalidate()

    def remove(self, name: str) -> LoRAPair:
        """Detach adapter ``name`` (unmerged first if it was merged)."""
        if self.lora[name].merged:
            self.unmerge(name)
        pair = self.lora.pop(name)
        delattr(self, f"lora_A__{name}")
        delattr(self, f"lora_B__{name}")
        self.invalidate()
        return pair

    def invalidate(self) -> None:
        """Call after changing any adapter's scale, switch or tensors."""
        self._fused = None
        self._fused_valid = False

    def merge(self, name: str) -> None:
        """W0 += s·c·B·A (in place, in the weight's own storage)."""
        pair = self.lora[name]
        if pair.merged:
            return
        if isinstance(self.base, QuantizedLinear):
            raise TypeError(f"cannot merge a LoRA adapter into {self.base.method} weights")
        with torch.no_grad():
            w = self.base.weight
            w.copy_((w.float() + pair.delta().to(w.device)).to(w.dtype))
        pair.merged_scale = pair.scale
        self.invalidate()

    def unmerge(self, name: str) -> None:
        """W0 -= the product added by :meth:`merge` (exact up to float rounding)."""
        pair = self.lora[name]
        if not pair.merged:
            return
        with torch.no_grad():
            w = self.base.weight
            w.copy_((w.float() - pair.delta(pair.merged_scale).to(w.device)).to(w.dtype))
        pair.merged_scale = None
        self.invalidate()

    # --- forward -------------------------------------------------------------

    def _fused_pair(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(A_cat^T [in, R], B_cat^T [R, out]) of the active adapters, built once per change."""
        if self._fused_valid and self._fused is not None and self._versions != self._tensor_versions():
            self._fused_valid = False  # A or B changed in place (an optimizer step): rebuild
        if not self._fused_valid:
            active = [p for p in self.lora.values() if p.active]
            self._fused = None
            self._versions = self._tensor_versions()
            if active:
                wd = float_dtype_device(self.base)[0]  # inference runs in the base dtype, whatever A/B are stored in
                with torch.no_grad():
                    at = torch.cat([p.A.to(wd) for p in active], dim=0).t()  # [in, R]
                    hi = torch.promote_types(wd, torch.float32)  # scale B in at least float32, then round once
                    bt = torch.cat([(p.B.to(hi) * (p.scale * p.scaling)).to(wd).t() for p in active], dim=0)  # [R, out]
                self._fused = (at.contiguous(), bt.contiguous())
            self._fused_valid = True
        return self._fused

    def _tensor_versions(self) -> tuple[int, ...]:
        # Autograd's in-place counters: any in-place write to A or B bumps them.
        return tuple(v for p in self.lora.values() for v in (p.A._version, p.B._version))

    def _apply(self, fn, recurse: bool = True):
        self.invalidate()  # .to(device/dtype): the fused copies must follow
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., in] -> y: [..., out]. F.linear is exactly nn.Linear.forward, minus a module call
        # (per-token overhead matters: a small model has hundreds of wrapped layers).
        base = self.base
        y = F.linear(x, base.weight, base.bias) if type(base) is nn.Linear else base(x)  # quantised: its own kernel
        return self.add_side(x, y)

    def trains(self) -> bool:
        """Whether gradients flow to any adapter's A or B now (grad mode on, a trainable pair)."""
        return torch.is_grad_enabled() and any(p.A.requires_grad or p.B.requires_grad for p in self.lora.values())

    def add_side(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """y (the base layer's output for x, e.g. a slice of a fused q/k/v matmul) plus the
        active adapters' low-rank terms. x: [..., in], y: [..., out] -> [..., out]; in inference
        y is updated in place and returned."""
        if self._fused_valid and self._fused is None:
            return y  # nothing active: exactly the base layer
        if self.trains():
            # Training: keep each adapter separate so gradients reach its A and B.
            for p in self.lora.values():
                if p.active:
                    y = _add_trained_side(y, x, p, self.training)
            return y
        fused = self._fused_pair()
        if fused is None:
            return y
        at, bt = fused
        if y.requires_grad:  # gradients wanted through y (a split view there): no in-place write
            return y + (x @ at) @ bt
        # y += (x A_cat^T) B_cat^T in place, no [N, out] temporary (y is fresh from the base matmul).
        y.view(-1, y.shape[-1]).addmm_(x.reshape(-1, x.shape[-1]) @ at, bt)
        return y

    def extra_repr(self) -> str:
        return f"adapters={list(self.lora.keys())}"


def _add_trained_side(y: torch.Tensor, x: torch.Tensor, p: LoRAPair, training: bool) -> torch.Tensor:
    """y + s·c·B·A·dropout(x) [.., out] for x [.., in], out of place, gradients reaching A and B.

    The low-rank product runs in A/B's dtype (float32 masters on a bf16 base, cast back to y's
    dtype). The scales (s·c, and dropout's 1 / (1 - p)) multiply the rank-r product, not the
    [.., out] one, and where the dtypes agree B's product and the sum are one ``addmm`` (no
    [.., out] temporary). Dropout zeroes entries with F.dropout's distribution, drawn from the
    dropped positions only and written into a copy of x (:mod:`.training.dropout_mask`, from the same
    global generator): LoRA dropout runs on every input of every adapted layer, and on CPU a
    draw per entry was 14% of an SFT step."""
    xa = x.to(p.A.dtype)
    scale = p.scale * p.scaling
    if p.dropout and training:
        xa = dropped(xa, p.dropout)
        scale /= 1.0 - p.dropout
    h = F.linear(xa, p.A) * scale  # [.., r]
    if h.dtype == y.dtype:
        return torch.addmm(y.reshape(-1, y.shape[-1]), h.reshape(-1, p.r), p.B.t()).view(y.shape)
    return y + F.linear(h, p.B).to(y.dtype)


@dataclass
class Replacement:
    """A full replacement weight brought by one adapter (PEFT ``modules_to_save``)."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    scale: float = 1.0
    enabled: bool = True

    @property
    def active(self) -> bool:
        return self.enabled and self.scale != 0.0


class ReplacedModule(nn.Module):
    """``lm_head`` (Linear) or ``embed_tokens`` (Embedding) with per-adapter replacement weights
    (either may be quantised: a replacement stays float)."""

    def __init__(self, base: nn.Module):
        super().__init__()
        if not isinstance(base, (nn.Linear, nn.Embedding, QuantizedLinear, QuantizedEmbedding)):
            raise TypeError(f"ReplacedModule wraps nn.Linear, nn.Embedding or a quantised one, got {type(base).__name__}")
        self.base = base
        self.replacements: dict[str, Replacement] = {}  # load order; the last active one wins

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def add(self, name: str, rep: Replacement) -> None:
        if tuple(rep.weight.shape) != weight_shape(self.base):
            raise ValueError(f"replacement {tuple(rep.weight.shape)} does not match {weight_shape(self.base)}")
        dtype, device = float_dtype_device(self.base)  # a quantised head's replacement stays float
        rep.weight = rep.weight.detach().to(device=device, dtype=dtype)
        if rep.bias is not None:
            rep.bias = rep.bias.detach().to(device=device, dtype=dtype)
        self.replacements[name] = rep

    def remove(self, name: str) -> Replacement:
        return self.replacements.pop(name)

    def current(self) -> Replacement | None:
        active = [r for r in self.replacements.values() if r.active]
        return active[-1] if active else None

    def _with_weight(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        # (Not ``_apply``: that name is nn.Module's hook for .to()/.float(), which must keep working.)
        if isinstance(self.base, nn.Embedding):
            b = self.base
            return F.embedding(x, weight, b.padding_idx, b.max_norm, b.norm_type, b.scale_grad_by_freq, b.sparse)
        if isinstance(self.base, QuantizedEmbedding):
            return F.embedding(x, weight)
        return F.linear(x, weight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rep = self.current()
        if rep is None:
            return self.base(x)
        bias = rep.bias if rep.bias is not None else getattr(self.base, "bias", None)
        new = self._with_weight(x, rep.weight, bias)
        if rep.scale == 1.0:
            return new
        base = self.base(x)
        return base + rep.scale * (new - base)

    def extra_repr(self) -> str:
        return f"replacements={list(self.replacements)}"
