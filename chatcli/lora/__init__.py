"""LoRA adapters: the per-model manager, PEFT I/O and validation, specs, merging, comparing."""
