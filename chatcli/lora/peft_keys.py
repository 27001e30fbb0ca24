"""PEFT's tensor names: one table from a key to (kind, module, part) and back.

Tensor keys map through one table (``PEFT_PREFIX`` + module + suffix)::

    base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight  <->  (model.layers.3.self_attn.q_proj, A)
    base_model.model.lm_head.weight                                  <->  (lm_head, replacement weight)

Module names are the model's own (they mirror Hugging Face's), so the table only
adds PEFT's prefix and part suffixes. A key chatcli cannot use is refused by name.
"""

from __future__ import annotations

from chatcli.lora.config import HEAD_MODULES, SAVED_MODULES
from chatcli.lora.validate import AdapterError

PEFT_PREFIX = "base_model.model."

# --- the key table ----------------------------------------------------------------------------

# Tensor-name suffix -> (kind, part). "lora" parts belong to a LoRA-wrapped linear layer,
# "saved" parts to a modules_to_save replacement; "refuse" names what chatcli does not run.
KEY_SUFFIXES: dict[str, tuple[str, str]] = {
    ".lora_A.weight": ("lora", "A"),
    ".lora_B.weight": ("lora", "B"),
    ".lora_A.bias": ("refuse", "LoRA bias (lora_bias)"),
    ".lora_B.bias": ("refuse", "LoRA bias (lora_bias)"),
    ".lora_magnitude_vector": ("refuse", "DoRA (use_dora)"),
    ".lora_magnitude_vector.weight": ("refuse", "DoRA (use_dora)"),
    ".lora_embedding_A": ("refuse", "LoRA on embeddings (lora_embedding_A/B); use modules_to_save"),
    ".lora_embedding_B": ("refuse", "LoRA on embeddings (lora_embedding_A/B); use modules_to_save"),
    ".base_layer.weight": ("base", "weight"),
    ".weight": ("saved", "weight"),
    ".bias": ("saved", "bias"),
}
_SUFFIX_ORDER = sorted(KEY_SUFFIXES, key=len, reverse=True)  # longest first: ".lora_A.weight" before ".weight"

def peft_key(module: str, part: str) -> str:
    """Our (module, part) -> PEFT key; part is "A", "B", "weight" or "bias"."""
    suffix = {"A": ".lora_A.weight", "B": ".lora_B.weight", "weight": ".weight", "bias": ".bias"}[part]
    return PEFT_PREFIX + module + suffix


def parse_key(key: str, source: str) -> tuple[str, str, str]:
    """PEFT key -> (kind "lora" | "saved" | "base", module, part). Raises for keys chatcli cannot use.

    "base" is a copy of the base model's own lm_head / embed_tokens that PEFT saves
    beside an adapter targeting them (``save_embedding_layers``)."""
    if not key.startswith(PEFT_PREFIX):
        raise AdapterError(f"{source}: tensor {key!r} is not a PEFT adapter key (they start with {PEFT_PREFIX!r})")
    rest = key[len(PEFT_PREFIX):]
    for suffix in _SUFFIX_ORDER:
        if rest.endswith(suffix) and len(rest) > len(suffix):
            kind, part = KEY_SUFFIXES[suffix]
            module = rest[: -len(suffix)]
            if kind == "refuse":
                raise AdapterError(f"{source}: tensor {key!r} is {part}, which chatcli does not support")
            if kind == "saved" and module in HEAD_MODULES:
                return "head", module, part
            if kind in ("saved", "base") and module not in SAVED_MODULES.values():
                break  # a plain weight of some other module: reported below
            return kind, module, part
    raise AdapterError(f"{source}: tensor {key!r} is not a LoRA tensor of any module chatcli knows")
