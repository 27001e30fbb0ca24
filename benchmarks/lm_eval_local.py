"""lm-evaluation-harness against ``chatcli serve``: a custom multiple-choice task on a local JSONL file.

    .venv/bin/python benchmarks/lm_eval_local.py [--model smollm2-135m-instruct] [--data FILE.jsonl]
                                                 [--limit N] [--port N] [--chatcli CMD]

Outside CI (it loads a real model and takes a minute or more). It starts ``chatcli serve``
on a free loopback port under the served name ``chatcli-eval``, writes an lm-eval task for
the JSONL file (one ``{"question", "choices", "answer"}`` object per line; ``answer`` is the
index of the right choice) and runs it with lm-eval's ``local-completions`` model: every
choice is scored as a continuation of ``Question: ...\\nAnswer:`` by ``/v1/completions``
with ``echo: true``, ``logprobs: 1`` and token-id prompts, and the tokenizer is the
server's own (``/tokenizer_info``, ``/tokenize``: no Hugging Face download). It prints
lm-eval's table (acc, acc_norm) and how long the run took.

lm-eval is not a chatcli dependency. Install it where this script runs:

    .venv/bin/pip install "lm_eval[api]"        # or: uv pip install "lm_eval[api]"

or run the script with another Python that has it, pointing ``--chatcli`` at chatcli's own
command (``--chatcli .venv/bin/chatcli``). Without lm-eval it says how to install it and exits 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data" / "lm_eval_basics.jsonl"
SERVED_NAME = "chatcli-eval"
TASK = "chatcli_local_mc"
INSTALL = ('lm-eval is not installed here. Install it (it is not a chatcli dependency):\n'
           '    .venv/bin/pip install "lm_eval[api]"        # or: uv pip install "lm_eval[api]"\n'
           "or run this script with a Python that has it: --chatcli .venv/bin/chatcli")  # fmt: skip

TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def chatcli_command(given: str | None) -> list[str]:
    """How to start chatcli: --chatcli, else this Python's chatcli, else the one on PATH."""
    if given:
        return shlex.split(given)
    if importlib.util.find_spec("chatcli") is not None:
        return [sys.executable, "-m", "chatcli"]
    found = shutil.which("chatcli")
    if found is None:
        sys.exit("chatcli is not importable here and not on PATH: pass --chatcli PATH/TO/chatcli")
    return [found]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(command: list[str], model: str, port: int, log: Path) -> subprocess.Popen:
    args = [*command, "serve", "--model", model, "--port", str(port), "--served-model-name", SERVED_NAME,
            "--log-level", "warning"]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            if proc.poll() is not None:
                sys.exit(f"chatcli serve stopped:\n{log.read_text()}")
            if time.monotonic() > deadline:
                proc.terminate()
                sys.exit("chatcli serve did not start within 10 minutes")
            time.sleep(0.5)


def write_task(folder: Path, data: Path) -> None:
    (folder / f"{TASK}.yaml").write_text(TASK_YAML.format(task=TASK, data=json.dumps(str(data.resolve()))))


def evaluate(port: int, task_dir: Path, limit: int | None) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    model_args = {
        "base_url": f"http://127.0.0.1:{port}/v1/completions", "model": SERVED_NAME,
        "tokenizer_backend": "remote",  # the server's /tokenizer_info and /tokenize
        "tokenized_requests": True,  # prompts as token ids: context and continuation split exactly
        "num_concurrent": 1, "max_retries": 1, "batch_size": 1,
    }  # fmt: skip
    return lm_eval.simple_evaluate(
        model="local-completions", model_args=model_args, tasks=[TASK],
        task_manager=TaskManager(include_path=str(task_dir)), limit=limit, log_samples=False,
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="what chatcli serve loads (--model)")
    parser.add_argument("--data", type=Path, default=DATA, help="JSONL: {question, choices, answer} per line")
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions")
    parser.add_argument("--port", type=int, default=0, help="port for chatcli serve (default: a free one)")
    parser.add_argument("--chatcli", default=None, help="the chatcli command (default: this Python's, else PATH)")
    args = parser.parse_args()
    if importlib.util.find_spec("lm_eval") is None:
        print(INSTALL, file=sys.stderr)
        return 2
    if not args.data.is_file():
        print(f"no such file: {args.data}", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the data is local: datasets need not ask the Hub
    port = args.port or free_port()
    with tempfile.TemporaryDirectory(prefix="chatcli-lm-eval-") as tmp:
        folder = Path(tmp)
        write_task(folder, args.data)
        started = time.perf_counter()
        server = start_server(chatcli_command(args.chatcli), args.model, port, folder / "serve.log")
        loaded = time.perf_counter()
        try:
            results = evaluate(port, folder, args.limit)
        finally:
            server.terminate()
            server.wait(30)
        done = time.perf_counter()
    from lm_eval.utils import make_table

    print(make_table(results))
    n = results.get("n-samples", {}).get(TASK, {}).get("effective", "?")
    print(f"{args.model} served as {SERVED_NAME}: {n} questions from {args.data.name}; server start "
          f"{loaded - started:.1f} s, evaluation {done - loaded:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
