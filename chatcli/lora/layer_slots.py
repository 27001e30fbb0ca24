"""The model's adaptable layers as the adapter manager sees them (:class:`LayerSlots`).

A mixin of :class:`~chatcli.lora.manager.AdapterManager`, which records, before any layer
is wrapped, every linear layer (and the replaceable embedding and head) as a slot: its
parent module, the attribute it hangs on, the original module object (``_slots``). Each
layer an adapter touches gets one wrapper, created once and kept (``_wrappers``:
:class:`~chatcli.model.lora_linear.LoRALinear` or
:class:`~chatcli.model.lora_linear.ReplacedModule`); :meth:`LayerSlots._place` puts it in
the model only while it has work and the original module object back otherwise, so an
adapter that is off or merged costs nothing per token. :meth:`LayerSlots.base_weight` and
:meth:`LayerSlots.base_norm` read W0 under any merged adapters without writing the model.
"""

from __future__ import annotations

from typing import Any

import torch

from chatcli.model.lora_linear import LoRALinear, ReplacedModule
from chatcli.model.qlinear import QUANTIZED_MODULES, QuantizedLinear, float_dtype_device


class LayerSlots:
    def base_weight(self, module: str) -> torch.Tensor:
        """W0 of linear ``module``: [out, in] float32, the weight without any adapter. A quantised
        (int8, int4) layer is dequantised; a weight holding merged adapters gives back merged − s·c·B·A
        (a new tensor, one module at a time; the model's weight is not touched)."""
        layer = self._slots[module][2]
        if isinstance(layer, QuantizedLinear):
            return layer.dequantize(torch.float32)
        w = layer.weight.detach().float()  # the weight itself when it is float32: never written below
        wrapper = self._wrappers.get(module)
        for pair in wrapper.lora.values() if isinstance(wrapper, LoRALinear) else ():
            if pair.merged:
                w = w - pair.delta(pair.merged_scale).to(w.device)
        return w

    def base_norm(self, module: str) -> float:
        """‖W0‖_F of linear ``module`` (:meth:`base_weight`), remembered per module and dtype: the
        base weights stay as they are while the model is loaded (merging changes them only
        by what unmerging takes back), and reading them all takes a second on a small CPU."""
        layer = self._slots[module][2]
        key = (module, layer.method if isinstance(layer, QuantizedLinear) else layer.weight.dtype)
        if key not in self._norms:
            self._norms[key] = float(torch.linalg.vector_norm(self.base_weight(module)))
        return self._norms[key]

    def _dtype_device(self) -> tuple[torch.dtype, torch.device]:
        return float_dtype_device(self._slots[next(iter(self.shapes.linears))][2])

    def _current(self, module: str) -> Any:
        """The wrapper of ``module`` (in the model or parked beside it)."""
        return self._wrappers[module]

    def _wrapper(self, module: str, kind: type) -> Any:
        wrapper = self._wrappers.get(module)
        if not isinstance(wrapper, kind):
            # Created once per module and kept: a reload costs no module creation.
            wrapper = kind(self._slots[module][2])
            self._wrappers[module] = wrapper
        return wrapper

    def _place(self, modules) -> None:
        """Put each wrapper in the model only while it has work (an active side path or
        replacement); otherwise the original module object. So an adapter that is off or
        merged costs nothing per token, and the model is structurally the base model."""
        for module in modules:
            parent, attr, original = self._slots[module]
            current = getattr(parent, attr)
            wrapper = self._wrappers.get(module)
            if current is not original and current is not wrapper:
                raise AssertionError(f"{module} was replaced outside the adapter manager")
            busy = wrapper is not None and (
                any(p.active for p in wrapper.lora.values())
                if isinstance(wrapper, LoRALinear)
                else wrapper.current() is not None
            )
            want = wrapper if busy else original
            if current is not want:
                if busy:
                    wrapper.training = original.training
                parent.register_module(attr, want)  # replaces the child of that name

    def _detach(self, module: str, name: str) -> None:
        wrapper = self._wrappers.get(module)
        if isinstance(wrapper, LoRALinear):
            if name in wrapper.lora:
                wrapper.remove(name)
        elif isinstance(wrapper, ReplacedModule):
            wrapper.replacements.pop(name, None)
        self._place([module])

    def _shared_weight(self, module: str) -> bool:
        layer = self._slots[module][2]
        if isinstance(layer, QUANTIZED_MODULES):
            return False  # a quantised layer holds its own copy (a tied head's included)
        w = layer.weight
        return any(
            other != module and not isinstance(m, QUANTIZED_MODULES) and getattr(m, "weight", None) is w
            for other, (_, _, m) in self._slots.items()
        )
