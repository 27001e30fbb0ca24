"""Weight-only int8 quantisation of a whole model (``--quantize int8``): smaller weights, faster decode.

``quantize_model(model, "int8")`` replaces every projection ``nn.Linear`` of the
decoder (q/k/v/o, gate/up/down in each layer) and the LM head with an
:class:`~chatcli.model.int8.Int8Linear` (the maths and the compute paths are
described there), by their Hugging Face names, so LoRA keys still name them. A tied
LM head gets its own int8 copy; the embedding stays float for the lookup. Norms,
RoPE, attention and the KV cache keep the model dtype.

On a packed model (:mod:`chatcli.model.packed`) q/k/v and gate/up are also fused into
one int8 matmul each (:class:`~chatcli.model.packed.Int8Group`); moving the model
(``.to()``) re-packs it and drops that fusion (the layers are then called one by one:
same numbers, a bit slower). Merging a LoRA adapter into int8 weights and training on
them are refused elsewhere (adapters, fine-tuning): load without ``--quantize`` for those.
"""

from __future__ import annotations

from torch import nn

from chatcli.model.int8 import Int8Linear
from chatcli.model.packed import Int8Group, pack_model
from chatcli.model.quant_choice import check_quantize

# Projections quantised in each decoder layer (HF names), plus the LM head.
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def quantize_model(model: nn.Module, method: str = "int8") -> int:
    """Replace the decoder's projections and LM head by :class:`Int8Linear` in place; returns how many.

    ``none`` changes nothing. The model must not carry LoRA wrappers yet (quantise first,
    then load adapters, which wrap the int8 layers).
    """
    method = check_quantize(method)
    if method == "none":
        return 0
    targets = quantizable(model)
    for parent, attr, linear in targets:
        parent.register_module(attr, Int8Linear.from_linear(linear))  # replaces the child of that name
    if getattr(model, "packed", False):
        # Re-pack from the current modules: float groups whose members are now int8 are
        # dropped, and with them the packed float storage they kept alive.
        pack_model(model)
        for layer in model.model.layers:
            layer.self_attn.qkv_group = Int8Group.pack(layer.self_attn, ("q_proj", "k_proj", "v_proj"))
            layer.mlp.gate_up_group = Int8Group.pack(layer.mlp, ("gate_proj", "up_proj"))
    return len(targets)


def quantizable(model: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, linear) of every plain nn.Linear that int8 replaces, by HF name."""
    out = []
    for name, module in model.named_modules():
        for attr, child in module.named_children():
            full = f"{name}.{attr}" if name else attr
            if type(child) is nn.Linear and (attr in PROJECTIONS or full == "lm_head"):
                out.append((module, attr, child))
    return out
