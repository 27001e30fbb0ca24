"""The decoder in plain PyTorch: config, layers, RoPE, KV cache, packed/int8/int4 weights, the LoRA wrapper."""
