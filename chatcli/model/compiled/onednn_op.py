"""``chatcli::onednn_linear``: the bf16 oneDNN product of a prepacked weight, as an op a compiled step can call.

The eager decode step of a bf16 model takes oneDNN's prepacked weight for a product of a few rows
(``mkldnn._linear_pointwise``; the calibration's choice on CPUs where it wins). A compiled step must
compute the same numbers, so it has to call that kernel too, but AOTInductor cannot call it
directly: its lowering wants the packed weight as a constant baked into the program (the weights are
the step's inputs here) and its extern-call path cannot pass the op's empty list of scalars. This
op has the signature it can pass (``x``, the packed weight, the bias) and runs the same kernel
with the same arguments as :func:`chatcli.model.packed.fused_linear`: the same bits.

Registered when this module is imported; :mod:`chatcli.model.compiled.step_plan` imports it, so any
process that plans or loads a step (the chat, the background builder) has it before a package calls it.
"""

from __future__ import annotations

import torch


@torch.library.custom_op("chatcli::onednn_linear", mutates_args=())
def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x [..., in] times oneDNN's prepacked ``weight`` [out, in] (+ ``bias``): [..., out]."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


@onednn_linear.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))
