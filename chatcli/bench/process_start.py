"""Whole-process start to first token, and each process's peak RSS.

Each command runs as a child process, timed from spawn to the first byte it writes to
stdout (the token it prints, flushed as it streams; a child that prints nothing: its exit),
its peak RSS read from ``wait4``'s resource usage once it exited (that child alone). What
follows the first token (saving the run to the history, the interpreter's teardown, which
after ``import torch`` alone takes ~0.3 s of CPU) is not part of the figure, for the
reference as for every system. Commands run in interleaved
rounds after one untimed warm-up round, which also leaves each program's compiled
bytecode (``.pyc``) behind, as an installed package has it: the children run with
``PYTHONDONTWRITEBYTECODE`` unset, so an environment that sets it does not make every
timed start compile chatcli's modules from source again:

* ``python -c "import torch; print()"`` — the reference (issue 18: chatcli may add 1.0 s to it):
  its first output is the end of the import;
* ``chatcli generate "hi" --max-tokens 1`` — what a person types;
* the transformers baseline: a Python process that imports transformers, loads the
  checkpoint and generates one token for the same message (``transformers-loop``: the
  same with one plain forward and ``argmax`` instead of ``generate``);
* llama.cpp: a Python process that loads the GGUF with llama-cpp-python and generates one token.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chatcli.bench import prompts
from chatcli.bench.spec import BenchSpec
from chatcli.bench.stats import maxrss_mb

TRANSFORMERS_SCRIPT = """
import sys, torch
path, dtype, threads, text = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if threads: torch.set_num_threads(threads)
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
enc = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                              return_tensors="pt", return_dict=True)
with torch.inference_mode():
    out = model.generate(**enc, max_new_tokens=1, do_sample=False)
print(tok.decode(out[0, -1:]))
"""

TRANSFORMERS_LOOP_SCRIPT = """
import sys, torch
path, dtype, threads, text = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if threads: torch.set_num_threads(threads)
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), attn_implementation="sdpa").eval()
enc = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                              return_tensors="pt", return_dict=True)
with torch.inference_mode():
    logits = model(**enc, logits_to_keep=1).logits
print(tok.decode(logits[0, -1].argmax()))
"""

LLAMACPP_SCRIPT = """
import os, sys
from llama_cpp import Llama
path, threads, text = sys.argv[1], int(sys.argv[2]), sys.argv[3]
llm = Llama(model_path=path, n_ctx=512, n_threads=threads or os.cpu_count(), verbose=False)
out = llm.create_chat_completion([{"role": "user", "content": text}], max_tokens=1, temperature=0)
print(out["choices"][0]["message"]["content"])
"""


def chatcli_command(spec: BenchSpec) -> list[str]:
    exe = Path(sys.executable).with_name("chatcli")
    head = [str(exe)] if exe.is_file() else [sys.executable, "-m", "chatcli"]
    cmd = head + ["generate", prompts.HI, "--max-tokens", "1", "--temperature", "0",
                  "--model", spec.model, "--dtype", spec.dtype]  # fmt: skip
    if spec.threads:
        cmd += ["--threads", str(spec.threads)]
    if spec.quantize:
        cmd += ["--quantize", spec.quantize]
    # As set up by a person's earlier chats: a built package loads (milliseconds); --no-compile keeps a
    # run of the eager bench from starting a background build.
    return cmd + (["--compile"] if spec.compiled else ["--no-compile"])


def commands(spec: BenchSpec, skip: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """The command of each system but ``skip`` (and of the ``import torch`` reference, key ``python``)."""
    threads = str(spec.threads or 0)
    cmds = {"python": [sys.executable, "-c", "import torch; print(flush=True)"], "chatcli": chatcli_command(spec)}
    if "transformers" in spec.systems and "transformers" not in skip:
        cmds["transformers"] = [sys.executable, "-c", TRANSFORMERS_SCRIPT, spec.path, spec.dtype, threads, prompts.HI]
    if "transformers-loop" in spec.systems and "transformers-loop" not in skip:
        cmds["transformers-loop"] = [sys.executable, "-c", TRANSFORMERS_LOOP_SCRIPT, spec.path, spec.dtype, threads,
                                     prompts.HI]  # fmt: skip
    if "llama.cpp" in spec.systems and "llama.cpp" not in skip and spec.gguf:
        cmds["llama.cpp"] = [sys.executable, "-c", LLAMACPP_SCRIPT, spec.gguf, threads, prompts.HI]
    return cmds


def _env() -> dict[str, str]:
    """The bench's environment, but writing bytecode (see the module docstring)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_child(cmd: list[str], timeout: float = 600.0) -> tuple[float, float]:
    """(seconds to the first byte on stdout, else to exit; peak RSS in MB) of one child process;
    RuntimeError with its last stderr line if it fails."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, env=_env())
        out, first, deadline = proc.stdout.fileno(), None, t0 + timeout
        while True:  # wait4 with a deadline, reading stdout meanwhile (a full pipe would stall the child)
            if out is not None and select.select([out], [], [], 0.002)[0]:
                if os.read(out, 1 << 16):
                    first = time.perf_counter() if first is None else first
                else:
                    out = None  # end of output
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                raise RuntimeError(f"{Path(cmd[0]).name} took more than {timeout:.0f} s")
            if out is None:
                time.sleep(0.002)
        seconds = (time.perf_counter() if first is None else first) - t0
        proc.stdout.close()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            lines = err.read().decode("utf-8", "replace").strip().splitlines()
            raise RuntimeError(f"exit {proc.returncode}: {lines[-1] if lines else 'no message'}")
    return seconds, maxrss_mb(usage.ru_maxrss)


def measure(spec: BenchSpec, progress=None, skip: tuple[str, ...] = ()) -> dict[str, dict]:
    """Per system: ``{"start_s": [...], "peak_rss_mb": [...]}`` or ``{"error": "..."}``."""
    cmds = commands(spec, skip)
    out: dict[str, dict] = {name: {"start_s": [], "peak_rss_mb": []} for name in cmds}
    for rnd in range(1 + spec.repeats):  # round 0 is the warm-up (page cache, .pyc files)
        for name, cmd in cmds.items():
            if "error" in out[name]:
                continue
            if progress:
                progress(f"start: {name} ({'warm-up' if rnd == 0 else f'run {rnd}'})")
            try:
                wall, rss = run_child(cmd)
            except (RuntimeError, OSError) as e:
                out[name] = {"error": str(e)}
                continue
            if rnd:
                out[name]["start_s"].append(wall)
                out[name]["peak_rss_mb"].append(rss)
    return out

