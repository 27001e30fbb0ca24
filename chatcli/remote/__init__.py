"""A remote backend: an OpenAI-compatible server (vLLM, llama.cpp's server, ``chatcli serve``).

:func:`connect` returns a :class:`~chatcli.remote.backend.RemoteEngine`, which
implements :class:`chatcli.engine.protocol.ChatEngine`, so the TUI, the plain REPL,
``generate`` and the plugins use it as they use the local engine. Modules, one job each:

* :mod:`errors` — HTTP and transport failures -> one-line :class:`RemoteError` messages;
* :mod:`client` — the HTTP client: base URLs, the API key header, JSON calls, SSE streams;
* :mod:`steps` — OpenAI ``logprobs`` -> :class:`~chatcli.engine.events.Step` events;
* :mod:`backend` — the engine: identity from ``/v1/models``, chat/complete/batch streams;
* :mod:`adapters` — LoRA control on the server (vLLM's load/unload endpoints, llama.cpp's scales);
* :mod:`compare` — ``/compare`` over two requests (base and adapter), from the returned alternatives.

The API key is read from an environment variable and lives only in the client's
request header: never in messages, identities, history or exports.
"""

from __future__ import annotations

from chatcli.remote.backend import RemoteEngine, connect

__all__ = ["RemoteEngine", "connect"]
