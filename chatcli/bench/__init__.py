"""``chatcli bench``: the engine's honest self-report, side by side with transformers (and llama.cpp).

Layout (one job per module):

* :mod:`.cli` — the typer command and its option checks;
* :mod:`.spec` — the typed settings a run is made of (sizes, dtype, threads, systems);
* :mod:`.figures` — which figures exist, their units, and which way is better;
* :mod:`.runner` — one subprocess per (figure group, system), the JSON line protocol,
  and the collected medians;
* :mod:`.worker` — the subprocess entry point (``python -m chatcli.bench.worker``) that
  dispatches to :mod:`.chatcli_worker`, :mod:`.transformers_worker` (``generate`` and the plain
  KV-cache loop) or :mod:`.llamacpp_worker`;
* :mod:`.process_start` — whole-process start to first token, with each child's peak RSS;
* :mod:`.bandwidth` — single-stream read bandwidth, the decode floor's denominator;
* :mod:`.targets` and :mod:`.report` — the project's targets (✓/✗) and the printed table;
* helpers: :mod:`.prompts` (the texts every system gets), :mod:`.adapter` (the random
  rank-16 adapter), :mod:`.gguf_source` (llama.cpp's GGUF), :mod:`.machine`, :mod:`.stats`.

No figure is estimated or copied: each is measured in the run that prints it.
"""
