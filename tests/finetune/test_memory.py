"""The memory prediction: the article's rule of thumb plus an activation estimate, and the
measured peak printed beside them."""

from __future__ import annotations

import json

from chatcli_finetune.report import (
    ACT_FACTOR, LOGIT_COPIES, MB, REWARD_ACT_FACTOR, RichReporter, activation_memory, memory_line, predicted_memory,
)  # fmt: skip
from chatcli_finetune.run import run_training
from tests.finetune.test_train import _args, _pref_data, _sft_data

SMOL = dict(hidden=576, layers=30, vocab=49152)  # SmolLM2-135M's shape


def test_rule_of_thumb_is_the_articles():
    assert predicted_memory(1000, 2, 10, 4) == 1000 * 2 + 10 * 10 * 4


def test_activation_estimate_terms():
    sft = activation_memory("sft", 4, 128, dtype="float32", **SMOL)
    tokens = 4 * 128
    want = tokens * 576 * 30 * ACT_FACTOR["float32"] + int(tokens * 49152 * 4 * LOGIT_COPIES["float32"])
    assert sft == want
    # DPO and the reward model run chosen + rejected rows; the reward model has no logits.
    assert activation_memory("dpo", 2, 128, dtype="float32", **SMOL) == sft
    assert activation_memory("dpo", 4, 128, dtype="float32", **SMOL) == 2 * sft
    reward = activation_memory("reward", 2, 128, dtype="float32", **SMOL)
    assert reward == tokens * 576 * 30 * REWARD_ACT_FACTOR["float32"]
    # the reward runs' measured peak-RSS slopes per token (10^6 bytes), float32 and bfloat16 (report.py's docstring)
    assert abs(reward / tokens / 1e6 - 2.08) < 0.05
    bf16 = activation_memory("reward", 2, 128, dtype="bfloat16", **SMOL)
    assert abs(bf16 / tokens / 1e6 - 1.45) < 0.05
    # Linear in batch and length; bf16 and checkpointing need less.
    assert activation_memory("sft", 8, 128, dtype="float32", **SMOL) == 2 * sft
    assert activation_memory("sft", 4, 256, dtype="float32", **SMOL) == 2 * sft
    assert activation_memory("sft", 4, 128, dtype="bfloat16", **SMOL) < sft
    ckpt = activation_memory("sft", 4, 128, dtype="float32", grad_checkpointing=True, **SMOL)
    assert ckpt < 0.55 * sft  # (the float32 log-probs over the vocabulary are not checkpointed)
    # The calibration runs of issue 18's round 7 measured (peak RSS per token, MiB): float32 2.17,
    # checkpointed 0.710; bfloat16 1.56 and 0.725.
    assert abs(sft / tokens / MB - 2.17) < 0.05 and abs(ckpt / tokens / MB - 0.710) < 0.05
    bf16 = activation_memory("sft", 4, 128, dtype="bfloat16", **SMOL)
    bf16_ckpt = activation_memory("sft", 4, 128, dtype="bfloat16", grad_checkpointing=True, **SMOL)
    assert abs(bf16 / tokens / MB - 1.56) < 0.05 and abs(bf16_ckpt / tokens / MB - 0.725) < 0.05


def test_run_summary_shows_rule_activations_total_and_peak(tmp_path, tiny_model_dir, capsys):
    r = run_training(_args("sft", _sft_data(tmp_path), tmp_path / "sft", tiny_model_dir, max_steps=1, max_len=64))
    s = r["summary"]
    assert s["rule_of_thumb_mb"] > 0 and s["activations_mb"] > 0 and s["peak_memory_mb"] > 0
    assert abs(s["predicted_memory_mb"] - (s["rule_of_thumb_mb"] + s["activations_mb"])) <= 0.11
    cfg = r["model"].config
    longest = max(len(e.ids) for e in r["train"] + r["val"])
    assert longest < 64  # the estimate follows the data, not only --max-len
    acts = activation_memory("sft", 2, longest, cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size, "float32")
    assert s["activations_mb"] == round(acts / MB, 1)
    plan = json.loads(next(x for x in r_lines(tmp_path, tiny_model_dir) if '"plan"' in x))
    assert plan["predicted_bytes"] == plan["rule_bytes"] + plan["activation_bytes"] and plan["activation_bytes"] > 0
    line = memory_line(s)
    assert "measured peak" in line and "rule of thumb" in line and "activations" in line
    from chatcli_finetune.report import Plan

    rep = RichReporter()
    rep.plan(Plan(**{k: v for k, v in plan.items() if k not in ("event", "trainable_percent")}))
    rep.end(s, "")
    err = capsys.readouterr().err
    assert "rule of thumb" in err and "activations" in err  # the plan shows the parts and the total
    assert "measured peak" in err and f"{s['predicted_memory_mb']:,.0f} MB" in err


def r_lines(tmp_path, model_dir) -> list[str]:
    from chatcli_finetune.report import QuietReporter

    rep = QuietReporter()
    run_training(_args("dpo", _pref_data(tmp_path), tmp_path / "dpo", model_dir, max_steps=1, max_len=128), rep)
    return rep.lines
