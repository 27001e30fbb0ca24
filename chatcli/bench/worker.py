"""A bench worker: one figure group of one system, in a fresh process.

    python -m chatcli.bench.worker SYSTEM GROUP SPEC_JSON

Protocol: the worker sets torch's threads, loads the model, runs a warm-up and
``spec.repeats`` measured runs, and prints exactly one line starting with
:data:`MARKER` followed by a JSON object: ``{"figures": {id: [values]}, "load_s",
"peak_rss_mb", "threads", "info": {...}, "notes": [...]}``, or ``{"error": "one line"}``
with exit code 1. Anything else it prints (library chatter) is ignored.
"""

from __future__ import annotations

import importlib
import json
import sys

from chatcli.bench.spec import BenchSpec
from chatcli.bench.stats import own_peak_rss_mb

MARKER = "CHATCLI-BENCH-RESULT "

_MODULES = {
    "chatcli": "chatcli.bench.chatcli_worker",
    "transformers": "chatcli.bench.transformers_worker",
    "transformers-loop": "chatcli.bench.transformers_worker",
    "llama.cpp": "chatcli.bench.llamacpp_worker",
    "python": "chatcli.bench.bandwidth",  # system-independent figures (the read bandwidth)
}
_ENTRY = {"transformers-loop": "run_loop"}  # a module's function for a system other than run(spec, group)
# The train group measures the fine-tuning plugin's trainer: chatcli.bench.train sits in the house
# plan's plugin layer, above the rest of the bench, so it is reached by name here, as every worker is.
_TRAIN_MODULES = {"chatcli": "chatcli.bench.train.chatcli_train", "transformers": "chatcli.bench.train.peft_loop"}


def run(system: str, group: str, spec: BenchSpec) -> dict:
    if spec.threads and system != "llama.cpp":  # llama.cpp takes its threads as an argument
        import torch

        torch.set_num_threads(spec.threads)
    module = _TRAIN_MODULES[system] if group == "train" else _MODULES[system]
    if group == "compile":  # chatcli only: the compiled decode step (chatcli.bench.compile_group)
        module = "chatcli.bench.compile_group"
    result = getattr(importlib.import_module(module), _ENTRY.get(system, "run"))(spec, group)
    result["peak_rss_mb"] = own_peak_rss_mb()
    if system != "llama.cpp":
        import torch

        result["threads"] = torch.get_num_threads()
    return result


def main(argv: list[str]) -> int:
    system, group, spec_json = argv
    try:
        result, rc = run(system, group, BenchSpec.from_json(spec_json)), 0
    except Exception as e:  # reported to the parent as one line; the parent decides what to do
        text = str(e).strip().splitlines()
        result, rc = {"error": f"{type(e).__name__}: {text[0] if text else ''}"}, 1
    sys.stdout.write("\n" + MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
