"""Show what a shipped adapter changes: greedy answers of the default model without and with it.

    python adapters/compare.py adapters/pirate "What is the capital of Italy?" "How do magnets work?"

Uses the public API and the adapter manager (what ``--lora`` and ``/load-lora`` do).
"""

from __future__ import annotations

import sys

from chatcli import api


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit("usage: python adapters/compare.py ADAPTER_DIR QUESTION [QUESTION ...]")
    adapter, questions = argv[0], argv[1:]
    model = api.load_model("smollm2-135m-instruct", device="cpu")
    manager = model.adapters  # changes invalidate the generator's KV cache by themselves
    for q in questions:
        base = api.generate(model, q, temperature=0, max_tokens=60)
        if not len(manager):
            manager.load(adapter)
        else:
            manager.enable(manager.names[0])
        tuned = api.generate(model, q, temperature=0, max_tokens=60)
        manager.disable(manager.names[0])
        print(f"Q: {q}\n  base:    {base.strip()!r}\n  adapter: {tuned.strip()!r}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
