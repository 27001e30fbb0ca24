"""The adapter slash commands' parts beside :mod:`chatcli.chat.lora_commands` (which registers them all).

* :mod:`~chatcli.chat.lora.adapter_control` — which adapter control a command acts on (the
  local engine's manager, a server's LoRA endpoints) and its arguments checked;
* :mod:`~chatcli.chat.lora.effect_commands` — ``/compare``, ``/lora-layers`` and the check
  after a load or a scale: what the adapters do to the last answer.

How it is all drawn is :mod:`chatcli.chat.lora_views`.
"""
