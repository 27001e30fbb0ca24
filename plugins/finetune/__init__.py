"""The ``finetune`` plugin: LoRA SFT, DPO and reward models from chats and rankings.

Adds the ``chatcli finetune sft|dpo|reward`` CLI group. This module only registers
it; torch and the training code are imported when a command runs.
"""

from __future__ import annotations

from chatcli.hookspecs import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_cli(register):
    register("finetune", "plugins.finetune.cli:finetune_app", "Train LoRA adapters: sft, dpo, reward (PEFT format).")
