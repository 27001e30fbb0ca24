"""`chatcli bench --quick` on a tiny random checkpoint: every figure measured, the JSON schema, one-line errors.

The bench spawns its own worker processes; these tests run the real command end to end
(no stubs) at the quick mode's sizes, and check that every number is a measured one:
positive, with min <= median <= max over the runs, and ratios that follow from the medians.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from chatcli.bench.adapter import linear_shapes
from chatcli.bench.runner import BALANCED
from chatcli.hub.safetensors_io import read_header
from tests.cli_support import run

ALL_FIGURES = {
    "load_s", "start_s", "prefill_tps", "decode_tps", "ttft_first_s", "ttft_last_s", "batch_tps",
    "sequential_tps", "adapter_load_ms", "adapter_none_tps", "adapter_unmerged_tps", "adapter_merged_tps",
    "peak_rss_mb", "decode_outside_ms",
}  # fmt: skip
# chatcli's own breakdown (no baseline measures it): the decode step's time outside the matrix products.
CHATCLI_ONLY = {"decode_outside_ms"}
# The plain transformers KV-cache loop: prefill, decode, turns and the whole-process start.
LOOP_FIGURES = {"load_s", "start_s", "prefill_tps", "decode_tps", "ttft_first_s", "ttft_last_s", "peak_rss_mb"}


def bench_cli(*argv: str, home) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHATCLI_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "chatcli", "bench", *argv], capture_output=True, text=True,
                          env=env, timeout=1400)  # fmt: skip


def check_stat(stat: dict, what: str) -> None:
    assert set(stat) >= {"median", "min", "max", "runs"}, what
    assert stat["runs"] and all(v > 0 for v in stat["runs"]), what
    assert 0 < stat["min"] <= stat["median"] <= stat["max"], what
    assert stat["min"] == min(stat["runs"]) and stat["max"] == max(stat["runs"]), what


@pytest.fixture(scope="module")
def baseline_report(tiny_model_dir, tmp_path_factory):
    proc = bench_cli("--model", str(tiny_model_dir), "--quick", "--baseline", "transformers", "--baseline",
                     "transformers-loop", "--threads", "1", "--json", home=tmp_path_factory.mktemp("home"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.mark.timeout(1500)  # the module's bench run (about 2-3 minutes on 2 idle cores) happens in its setup
def test_every_figure_is_measured_for_both_systems(baseline_report, tiny_model_dir):
    r = baseline_report
    assert r["schema"] == "chatcli-bench/1"
    assert r["systems"] == ["chatcli", "transformers", "transformers-loop"]
    assert r["settings"]["quick"] and r["settings"]["threads"] == 1 and r["settings"]["dtype"] == "float32"
    assert r["settings"]["path"] == str(tiny_model_dir)
    rows = {row["id"]: row for row in r["figures"]}
    assert set(rows) == ALL_FIGURES
    repeats = r["settings"]["repeats"]
    for fid, row in rows.items():
        assert row["unit"] and row["label"] and isinstance(row["higher_is_better"], bool)
        for system in r["systems"]:
            if (system == "transformers-loop" and fid not in LOOP_FIGURES) or (system != "chatcli" and fid in CHATCLI_ONLY):
                assert system not in row["results"] and system not in row["ratio"], fid  # not run, not invented
                continue
            stat = row["results"][system]
            check_stat(stat, f"{fid} {system}")
            if fid not in ("load_s", "adapter_load_ms"):
                balanced = row["group"] in BALANCED  # two workers a system, in a balanced order
                assert len(stat["runs"]) == (2 if balanced else 1) * repeats, fid
            if system != "chatcli":
                c, t = row["results"]["chatcli"]["median"], stat["median"]
                expected = c / t if row["higher_is_better"] else t / c
                assert row["ratio"][system] == pytest.approx(expected), (fid, system)
    # the adapter loads: one warm-up, then the quick mode's timed loads
    assert len(rows["adapter_load_ms"]["results"]["chatcli"]["runs"]) == r["settings"]["sizes"]["adapter_loads"]
    # each worker runs with the threads asked for
    assert {g["threads"] for s in r["info"].values() for g in s.values() if g.get("threads")} == {1}


@pytest.mark.timeout(1500)
def test_references_floor_and_targets(baseline_report, tiny_model_dir):
    r = baseline_report
    check_stat(r["reference"]["import_torch_s"], "import torch")
    check_stat(r["reference"]["read_gb_s"], "bandwidth")
    floor = r["floor"]
    # Weight bytes read per token: every tensor of the (tied) checkpoint once.
    header, _, _ = read_header(tiny_model_dir / "model.safetensors")
    stored = sum(e["data_offsets"][1] - e["data_offsets"][0] for k, e in header.items() if k != "__metadata__")
    assert floor["weight_bytes"] == stored
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    assert floor["kv_bytes_per_position"] == 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * head_dim * 4
    assert floor["bytes_per_token"] == pytest.approx(stored + floor["kv_bytes_per_position"] * floor["mean_context"])
    assert floor["tokens_per_s"] == pytest.approx(floor["read_gb_s"] * 1e9 / floor["bytes_per_token"])
    decode = next(row for row in r["figures"] if row["id"] == "decode_tps")
    assert floor["decode_share"] == pytest.approx(decode["results"]["chatcli"]["median"] / floor["tokens_per_s"])
    ids = {t["id"] for t in r["targets"]}
    assert ids == {"decode_float32", "prefill_1x", "turn_reuse", "batch_3x", "adapter_load", "adapter_unmerged",
                   "adapter_merged", "start"}  # fmt: skip
    assert all(isinstance(t["met"], bool) and t["value"] and t["rule"] for t in r["targets"])
    decode_target = next(t for t in r["targets"] if t["id"] == "decode_float32")
    assert decode_target["met"] == (decode["ratio"]["transformers-loop"] >= 1.3)
    assert decode_target["rule"] == ">= 1.3x transformers-loop"
    turn = next(t for t in r["targets"] if t["id"] == "turn_reuse")
    rows = {row["id"]: row["results"]["chatcli"]["median"] for row in r["figures"]}
    assert turn["met"] == (rows["ttft_last_s"] <= 1.2 * rows["ttft_first_s"])


def test_adapter_covers_every_linear_layer(tiny_model_dir, tmp_path):
    from chatcli.bench.adapter import write_random_adapter
    from chatcli.lora.peft_io import peft_key

    shapes = linear_shapes(tiny_model_dir)
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert len(shapes) == 7 * cfg["num_hidden_layers"]
    folder = write_random_adapter(tiny_model_dir, tmp_path / "a", rank=16)
    header, _, _ = read_header(folder / "adapter_model.safetensors")
    assert len(header) - ("__metadata__" in header) == 2 * len(shapes)
    for name, (out_f, in_f) in shapes.items():
        assert header[peft_key(name, "A")]["shape"] == [16, in_f]
        assert header[peft_key(name, "B")]["shape"] == [out_f, 16]
    assert json.loads((folder / "adapter_config.json").read_text())["r"] == 16


def test_table_without_baseline(tiny_model_dir, tmp_path):
    proc = bench_cli("--model", str(tiny_model_dir), "--quick", "--only", "decode,turns,bandwidth", "--repeats", "1",
                     home=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "decode tok/s (12 tokens, greedy)" in out and "time to first token, turn 10 (s)" in out
    assert "bandwidth floor:" in out and "transformers" not in out
    assert "(<= 1.2x turn 1)" in out and ("✓" in out or "✗" in out)
    assert "prefill" not in out  # groups left out are not measured


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is not None, reason="llama-cpp-python is installed")
def test_llama_cpp_column_says_not_installed(tiny_model_dir, tmp_path):
    proc = bench_cli("--model", str(tiny_model_dir), "--quick", "--only", "decode", "--repeats", "1",
                     "--baseline", "llama.cpp", "--json", home=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout)
    decode = next(row for row in r["figures"] if row["id"] == "decode_tps")
    assert decode["results"]["llama.cpp"] == {"skipped": "not installed"}
    check_stat(decode["results"]["chatcli"], "decode")
    assert "llama.cpp" not in decode["ratio"]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--dtype", "int4"], "--dtype"),
        (["--threads", "0"], "--threads"),
        (["--repeats", "0"], "--repeats"),
        (["--quantize", "int3"], "--quantize"),
        (["--baseline", "vllm"], "--baseline"),
        (["--only", "decode,speed"], "--only"),
        (["--gguf", "x.gguf"], "--gguf"),
        ([], "--quick"),  # the tiny model's 256-token context is too short for the full sizes
    ],
)
def test_bad_options_are_one_line(capsys, tiny_model_dir, argv, needle):
    code, out, err = run(capsys, "bench", "--model", str(tiny_model_dir), *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("chatcli: error:") and needle in err


def test_unknown_model_is_one_line(capsys, tmp_path):
    code, out, err = run(capsys, "bench", "--model", str(tmp_path / "nothing"), "--quick")
    assert code == 1 and out == "" and err.count("\n") == 1
