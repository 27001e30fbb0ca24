"""`chatcli bench --shape`: real architectures' shapes, their random-weight checkpoints, the table and the plot.

The public shapes are checked against the published parameter counts without building
them (the long runs stay out of CI); the tests build and measure the hidden tiny
shapes, end to end through the command, at the quick sizes, and check what is produced
(not how fast).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from chatcli.bench.shapes import random_weights
from chatcli.bench.shapes.architectures import SHAPES, parse_shapes
from chatcli.errors import UsageError
from tests.cli_support import run as cli_run


def test_public_shapes_have_the_published_parameter_counts():
    # The model cards' totals (tied heads counted once): the configs are the real ones.
    assert SHAPES["qwen2.5-0.5b"].param_count() == 494_032_768
    assert SHAPES["llama-3.2-1b"].param_count() == 1_235_814_400
    assert SHAPES["qwen2.5-1.5b"].param_count() == 1_543_714_304
    assert [s.name for s in parse_shapes("qwen2.5-1.5b, Qwen2.5-0.5b,qwen2.5-1.5b")] == ["qwen2.5-1.5b", "qwen2.5-0.5b"]
    with pytest.raises(UsageError, match="qwen2.5-0.5b,llama-3.2-1b,qwen2.5-1.5b"):
        parse_shapes("qwen2.5-7b")


def test_checkpoint_is_built_once_and_loads_in_chatcli_and_transformers():
    import transformers

    from chatcli.api import load_model

    shape = SHAPES["tiny-qwen2"]
    said: list[str] = []
    path = random_weights.ensure_checkpoint(shape, said.append)
    assert path == random_weights.shapes_root() / "tiny-qwen2" and len(said) == 1
    stamp = path / random_weights.STAMP
    built_at = stamp.stat().st_mtime_ns
    assert random_weights.ensure_checkpoint(shape, said.append) == path and len(said) == 1  # reused, not rebuilt
    assert stamp.stat().st_mtime_ns == built_at
    assert [p.name for p in path.parent.iterdir()] == ["tiny-qwen2"]  # no build folder left behind
    cfg = json.loads((path / "config.json").read_text())
    assert {k: cfg[k] for k in shape.config} == shape.config  # the shape's own config, plus the tokenizer's ids

    lm = load_model(str(path), dtype="float32", device="cpu")
    ids = lm.tokenizer.encode_chat([{"role": "user", "content": "Write a long story about a lighthouse."}])
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        ours = lm.model(torch.tensor([ids]))[0]
        theirs = hf(torch.tensor([ids])).logits[0]
    assert torch.isfinite(ours).all()
    assert torch.allclose(ours, theirs, atol=1e-4)
    assert 1.0 < float(theirs.std()) < 10.0  # spread like a trained model's logits, not flat

    # A greedy answer streams text step by step, as a trained model's does (an id with no text of
    # its own would be held back to the end of the answer, and the decode figure would time nothing).
    from chatcli.engine.events import Done, Step
    from chatcli.engine.params import SamplingParams

    events = list(lm.generator.stream(ids, SamplingParams(temperature=0, max_tokens=12), eos_ids=()))
    steps = [e for e in events if isinstance(e, Step)]
    assert len(steps) == 12 and all(s.text for s in steps)
    assert isinstance(events[-1], Done) and events[-1].text == "".join(s.text for s in steps)


def test_stale_or_interrupted_builds_are_redone(monkeypatch):
    shape = SHAPES["tiny-llama"]
    path = random_weights.ensure_checkpoint(shape)
    stamp = path / random_weights.STAMP
    stamp.write_text(json.dumps({**json.loads(stamp.read_text()), "fingerprint": "an older builder"}))
    assert random_weights.cached(shape) is None

    def fail(config, file, text_ids):
        file.write_bytes(b"half a file")
        raise OSError("disk went away")

    with monkeypatch.context() as m, pytest.raises(OSError):
        m.setattr(random_weights, "_write_weights", fail)
        random_weights.ensure_checkpoint(shape)
    # The failed rebuild left the old folder as it was and no build folder behind.
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny-llama"]
    assert random_weights.ensure_checkpoint(shape) == path and random_weights.cached(shape) == path


@pytest.mark.timeout(900)
def test_shape_bench_writes_the_table_and_the_plot(tmp_path):
    png = tmp_path / "scaling.png"
    env = {**os.environ, "CHATCLI_HOME": str(tmp_path / "home")}
    argv = ["--shape", "tiny-qwen2,tiny-llama", "--quick", "--variants", "int8,float32", "--baseline", "transformers",
            "--threads", "1", "--plot", str(png), "--json"]  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "chatcli", "bench", *argv], capture_output=True, text=True, env=env,
                          timeout=880)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout)
    assert r["schema"] == "chatcli-bench-shapes/1" and r["read_gb_s"] > 0
    assert r["settings"]["shapes"] == ["tiny-qwen2", "tiny-llama"] and r["settings"]["variants"] == ["float32", "int8"]
    got = [(row["shape"], row["system"], row["variant"]) for row in r["rows"]]
    assert got == [(s, sys_, v) for s in ("tiny-qwen2", "tiny-llama")
                   for sys_, v in (("chatcli", "float32"), ("transformers", "float32"), ("chatcli", "int8"))]  # fmt: skip
    for row in r["rows"]:
        assert row["params"] == SHAPES[row["shape"]].param_count()
        # (chatcli's decode group also reports its per-token time outside the matrix products)
        assert set(row["figures"]) - {"decode_outside_ms"} == {"prefill_tps", "decode_tps"}
        assert all(f["median"] > 0 and f["min"] <= f["median"] <= f["max"] for f in row["figures"].values())
        assert row["load_s"] > 0 and row["peak_rss_mb"] > 0
    by = {(row["shape"], row["system"], row["variant"]): row for row in r["rows"]}
    for shape in ("tiny-qwen2", "tiny-llama"):
        base = by[(shape, "transformers", "float32")]["figures"]["decode_tps"]["median"]
        for variant in ("float32", "int8"):  # int8 runs at --dtype float32: compared with transformers float32
            row = by[(shape, "chatcli", variant)]
            assert row["ratio"]["transformers"]["decode_tps"] == pytest.approx(row["figures"]["decode_tps"]["median"] / base)
            assert row["floor_tps"] == pytest.approx(r["read_gb_s"] * 1e9 / row["bytes_per_token"])
        # int8 weights are a quarter of float32's: fewer bytes read per decoded token
        assert by[(shape, "chatcli", "int8")]["weight_bytes"] < by[(shape, "chatcli", "float32")]["weight_bytes"] / 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    table = png.with_suffix(".md").read_text()
    assert table.count("\n| tiny-") == len(r["rows"]) and "decode tok/s (4 tokens, greedy)" in table
    assert "x tf)" in table  # chatcli cells carry their ratio to transformers
    assert json.loads(png.with_suffix(".json").read_text())["rows"] == r["rows"]
    assert "tiny-qwen2: building a random-weight checkpoint" in proc.stderr


def run(capsys, *argv):
    """``chatcli bench *argv`` in process: (exit code, stdout, stderr)."""
    return cli_run(capsys, "bench", *argv)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--variants", "int4"], "--variants is for scaling runs"),
        (["--plot", "x.png"], "--plot is for scaling runs"),
        (["--shape", "gpt-5"], "unknown --shape 'gpt-5'"),
        (["--shape", "tiny-qwen2", "--model", "smollm2"], "drop --model"),
        (["--shape", "tiny-qwen2", "--quantize", "int4"], "--variants"),
        (["--shape", "tiny-qwen2", "--dtype", "bfloat16"], "--variants"),
        (["--shape", "tiny-qwen2", "--variants", "int3"], "unknown --variants 'int3'"),
        (["--shape", "tiny-qwen2", "--baseline", "llama.cpp"], "llama.cpp"),
        (["--shape", "tiny-qwen2", "--only", "turns"], "unknown --only 'turns'"),
        (["--shape", "tiny-qwen2", "--decode-tokens", "1"], "--decode-tokens"),
        (["--shape", "tiny-qwen2", "--plot", "scaling.svg"], ".png"),
        (["--shape", "tiny-qwen2", "--prompt-tokens", "1000"], "positions"),  # the tiny shape's context is 512
    ],
)
def test_bad_shape_options_are_one_line_and_build_nothing(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == 2 and needle in err and out == ""
    assert not random_weights.shapes_root().exists()
