"""`chatcli bench --only train --quick` on a tiny model: chatcli's LoRA trainer beside transformers + PEFT.

Not timed: the figures must exist, be measured (positive, one per timed step), and be
comparable — both systems counted the same tokens per step and trained the same number
of LoRA parameters. The rows both systems get are checked on their own.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from chatcli.bench.spec import QUICK
from chatcli.bench.train.phase_rss import PhaseRss
from chatcli.bench.train.train_rows import batch, settings
from tests.bench.test_bench import bench_cli, check_stat

TRAIN_FIGURES = {"train_sft_tps", "train_dpo_tps", "train_sft_rss_mb", "train_dpo_rss_mb"}
needs_peft = pytest.mark.skipif(
    importlib.util.find_spec("peft") is None or importlib.util.find_spec("transformers") is None,
    reason="transformers + peft (dev extras) are not installed",
)


@needs_peft
@pytest.mark.timeout(600)
def test_train_figures_for_both_systems(tiny_model_dir, tmp_path):
    proc = bench_cli("--model", str(tiny_model_dir), "--quick", "--only", "train", "--baseline", "transformers",
                     "--threads", "1", "--json", home=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout)
    rows = {row["id"]: row for row in r["figures"]}
    assert set(rows) == TRAIN_FIGURES | {"load_s"}  # the other groups are not run
    repeats = r["settings"]["repeats"]
    for fid in TRAIN_FIGURES:
        for system in ("chatcli", "transformers"):
            stat = rows[fid]["results"][system]
            check_stat(stat, f"{fid} {system}")
            # two workers a system (balanced order), each with its timed steps (warm-up left out) and its peak
            assert len(stat["runs"]) == 2 * (repeats if fid.endswith("_tps") else 1), fid
        assert rows[fid]["ratio"]["transformers"] > 0
    chatcli, tf = r["info"]["chatcli"]["train"], r["info"]["transformers"]["train"]
    n, seq = QUICK.train_batch, QUICK.train_tokens
    # the same tokens counted per step, and the same LoRA (rank, targets) on both sides
    assert chatcli["tokens_per_step"] == tf["tokens_per_step"] == {"sft": n * seq, "dpo": 2 * n * seq}
    assert chatcli["trainable"] == tf["trainable"] and chatcli["trainable"]["sft"] > 0
    memory = chatcli["memory"]
    assert memory["rule_of_thumb_mb"] > 0 and all(v > 0 for v in memory["activations_mb"].values())
    notes = r["notes"]
    assert len([n for n in notes if n.startswith("train memory, the LoRA article's rule of thumb")]) == 1
    assert "train: each system ran twice, in the order chatcli, transformers, transformers, chatcli" in " ".join(notes)
    assert {t["id"] for t in r["targets"]} == {"train_sft", "train_dpo"}
    for t in r["targets"]:
        kind = t["id"].split("_")[1]
        ratio = rows[f"train_{kind}_tps"]["ratio"]["transformers"]
        assert t["met"] == (ratio >= 1.5) and t["value"] == f"{ratio:.2f}x"


def test_train_is_opt_in(tiny_model_dir, tmp_path):
    """The default groups leave training out (it is the long run); --only names it."""
    from chatcli.bench.cli import build_spec

    spec, _, _ = build_spec(str(tiny_model_dir), "float32", None, None, [], None, None, None, True)
    assert "train" not in spec.groups
    spec, _, _ = build_spec(str(tiny_model_dir), "float32", None, None, [], None, "train", None, True)
    assert spec.groups == ("train",)


def test_rows_are_exact_and_pairs_share_their_prompt(tiny_model_dir):
    from chatcli.engine.loader import load_prompt_renderer

    tok = load_prompt_renderer(str(tiny_model_dir)).tokenizer
    n, seq = QUICK.train_batch, QUICK.train_tokens
    sft = batch(tok, "sft", QUICK)
    assert len(sft.rows) == n and sft.tokens == n * seq
    assert all(len(r.ids) == seq and r.mask == (False,) * (seq // 2) + (True,) * (seq - seq // 2) for r in sft.rows)
    dpo = batch(tok, "dpo", QUICK)
    assert dpo.pairs == n and dpo.tokens == 2 * n * seq
    for chosen, rejected in zip(dpo.rows[:n], dpo.rows[n:]):
        assert len(chosen.ids) == len(rejected.ids) == seq
        assert chosen.ids[: seq // 2] == rejected.ids[: seq // 2] and chosen.ids != rejected.ids
    s = settings("sft", n)
    assert (s.rank, s.alpha, len(s.targets)) == (8, 16.0, 7)  # the fine-tuning plugin's defaults for a small set


def test_phase_peak_starts_again():
    rss = PhaseRss()
    if not rss.exact:
        pytest.skip("no resettable peak RSS on this system")
    rss.start()
    block = bytearray(200_000_000)  # touched: 200 MB resident
    high = rss.peak_mb()
    del block
    rss.start()
    assert rss.peak_mb() < high - 100
