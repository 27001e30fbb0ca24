"""Data-parallel fine-tuning: ``torchrun --nproc-per-node 2`` (gloo on CPU) gives the same adapter
as one process with the same global batch (dropout 0), through the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.finetune.test_train import QA


def _cli(args: list[str], nproc: int | None = None) -> subprocess.CompletedProcess:
    if nproc is None:
        cmd = [sys.executable, "-m", "chatcli", *args]
    else:
        torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
        cmd = [torchrun, "--standalone", f"--nproc-per-node={nproc}", "-m", "chatcli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_two_gloo_processes_equal_one_process(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    data = tmp_path / "sft.jsonl"
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in QA * 2]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["finetune", "sft", str(data), "--model", str(tiny_model_dir), "--rank", "4", "--dropout", "0",
              "--max-steps", "4", "--lr", "5e-3", "--val-split", "0", "--batch-size", "2", "--json", "--seed", "3"]  # fmt: skip
    one = _cli([*common, "--out", str(tmp_path / "one"), "--grad-accum", "2"])
    assert one.returncode == 0, one.stderr[-2000:]
    two = _cli([*common, "--out", str(tmp_path / "two")], nproc=2)
    assert two.returncode == 0, two.stderr[-2000:]
    plan = [json.loads(x) for x in two.stdout.splitlines() if x.startswith("{")]
    # The settings chosen from the data (here: alpha and targets) come first, from rank 0 alone, then the plan.
    assert [x["event"] for x in plan[:2]] == ["defaults", "plan"] and plan[1]["world_size"] == 2
    assert sum(1 for x in plan if x["event"] in ("defaults", "what_changed")) == 2
    assert sum(1 for x in plan if x["event"] == "step") == 4  # only rank 0 reports
    a = load_file(str(tmp_path / "one" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "two" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert diff < 1e-5, diff
    assert max(float(a[k].abs().max()) for k in a if "lora_B" in k) > 1e-3  # it trained
    losses_one = [json.loads(x)["loss"] for x in one.stdout.splitlines() if '"step"' in x and '"event": "step"' in x]
    losses_two = [x["loss"] for x in plan if x["event"] == "step"]
    assert losses_one == pytest.approx(losses_two, rel=1e-5)


def test_rl_two_gloo_processes_equal_one_process(tmp_path, tiny_model_dir):
    """GRPO under torchrun: each process samples and grades its share of the prompts (seeds depend on
    the prompt, not the process), so two processes give one process's adapter and its group log."""
    from safetensors.torch import load_file

    data = tmp_path / "prompts.jsonl"
    questions = ["Where is the fox?", "Say a number.", "What is Paris?", "Weather?"]
    data.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in questions))
    common = ["finetune", "rl", str(data), "--reward", "rule:max-words=1", "--model", str(tiny_model_dir),
              "--group-size", "3", "--max-new-tokens", "6", "--max-steps", "2", "--lr", "1e-2", "--val-split", "0",
              "--batch-size", "1", "--json", "--seed", "0"]  # fmt: skip
    one = _cli([*common, "--out", str(tmp_path / "one"), "--grad-accum", "2"])
    assert one.returncode == 0, one.stderr[-2000:]
    two = _cli([*common, "--out", str(tmp_path / "two")], nproc=2)
    assert two.returncode == 0, two.stderr[-2000:]
    events = [json.loads(x) for x in two.stdout.splitlines() if x.startswith("{")]
    assert sum(1 for x in events if x["event"] == "step") == 2  # only rank 0 reports
    a = load_file(str(tmp_path / "one" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "two" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    def groups(run: str) -> list:
        return [json.loads(x) for x in (tmp_path / run / "groups.jsonl").read_text().splitlines()]

    g1, g2 = groups("one"), groups("two")
    assert len(g2) == 4  # both processes' groups, logged once
    key = lambda gs: sorted((g["step"], g["prompt"], tuple(x["text"] for x in g["answers"])) for g in gs)  # noqa: E731
    assert key(g1) == key(g2)
