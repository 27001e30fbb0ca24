"""The weights a model would have with its active adapters folded in (for ``chatcli lora merge``).

``merged_state_dict(manager)`` returns every base parameter by checkpoint key with
each active adapter applied: ``W0 + s·c·B·A`` for LoRA layers (adapters already
merged are inside ``W0``), and for a replaced ``lm_head`` / ``embed_tokens`` the
replacement (interpolated by its scale; the last active one wins, as at run time).
Sums are done in float32 and rounded once to the weight's dtype. The model itself
is not changed. When the model ties its LM head to the embeddings and an adapter
makes them differ, ``lm_head.weight`` is included and the checkpoint must say
``tie_word_embeddings: false``; otherwise it is left out, as in the base checkpoint.
"""

from __future__ import annotations

import torch

from chatcli.model.lora_linear import lora_scaling

REPLACEABLE = ("lm_head", "model.embed_tokens")


def merged_state_dict(manager) -> tuple[dict[str, torch.Tensor], bool]:
    """(state dict, LM head untied) for ``manager``'s model with its active adapters applied."""
    state = manager.base_parameters()
    replaced: dict[str, tuple[torch.Tensor, float]] = {}
    for info in manager.list():  # load order
        if not info.enabled or info.scale == 0.0:
            continue
        adapter = manager.adapter(info.name)
        if not info.merged:
            for module, m in adapter.modules.items():
                key = f"{module}.weight"
                w = state[key]
                c = lora_scaling(m.r, m.alpha, adapter.use_rslora)
                delta = (m.B.float() @ m.A.float()) * (info.scale * c)  # [out, in]
                state[key] = (w.float() + delta.to(w.device)).to(w.dtype)
        for module, parts in adapter.saved.items():
            replaced[module] = (parts["weight"], info.scale)  # a later adapter overrides
    for module, (weight, scale) in replaced.items():
        key = f"{module}.weight"
        base = state[key]
        state[key] = weight if scale == 1.0 else base + scale * (weight.to(base.dtype) - base)
    tied = bool(getattr(getattr(manager.model, "config", None), "tie_word_embeddings", False))
    untied = tied and not torch.equal(state["lm_head.weight"], state["model.embed_tokens.weight"])
    if tied and not untied:
        state.pop("lm_head.weight", None)
    return state, untied
