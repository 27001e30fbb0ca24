"""The parts of the chat core (:class:`chatcli.chat.core.ChatCore`) that live beside it, one job each.

Each is a mixin of ``ChatCore`` and works on its state (``conv``, ``engine``, ``sampling``,
``store`` through ``_persist``, ``announce``), which stays defined in :mod:`chatcli.chat.core`:

* :mod:`~chatcli.chat.core_parts.answer_run` — :meth:`run`: a job's answer streamed into
  the conversation, saved in batches, announced to the listeners;
* :mod:`~chatcli.chat.core_parts.chat_settings` — ``/set``, ``/system``, ``/new``: the
  sampling parameters, where each came from, the system prompt;
* :mod:`~chatcli.chat.core_parts.prompt_views` — what the model sees (``/raw``), how full
  the context is, the conversation exported.
"""
