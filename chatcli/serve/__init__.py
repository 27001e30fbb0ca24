"""``chatcli serve``: an OpenAI-compatible HTTP server for the local engine.

Modules, one job each:

* :mod:`errors` — :class:`APIError`, the OpenAI error body, the log line of an unexpected failure;
* :mod:`json_body` — a request's bytes -> JSON, nesting bounded before parsing;
* :mod:`validate` — request JSON -> validated :class:`ChatRequest` / :class:`CompletionRequest`;
* :mod:`openai_format` — engine ``Step``/``Done`` events (and echoed prompts) -> OpenAI responses,
  chunks and logprobs;
* :mod:`prompt_echo` — a completion's prompt with each token's log-probability (``echo``);
* :mod:`tokenizer_api` — vLLM's ``/tokenize``, ``/detokenize`` and ``/tokenizer_info``;
* :mod:`worker` — the one engine thread and its FIFO queue (the engine is not re-entrant);
* :mod:`adapters` — the served names (``--served-model-name``) and adapters addressable as model
  names, loaded only from allowed folders;
* :mod:`app` — the Starlette routes, the bearer-key check, the guard that keeps connections open;
* :mod:`server` — uvicorn, in the foreground (the CLI) or a background thread (tests).

Logprobs are the raw model distribution (``Step.model_prob``, softmax at temperature 1),
as vLLM returns them by default, whatever sampling parameters the request used.
"""
