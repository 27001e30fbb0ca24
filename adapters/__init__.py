"""Demo LoRA adapters trained by the project on the default model (installed as ``chatcli.demo_adapters``).

Each folder is a PEFT adapter with its training data, the exact command and what to look for.
"""
