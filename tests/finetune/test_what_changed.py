"""The "what changed" report: /compare's numbers, greedy changes that match real greedy answers, the verdicts."""

from __future__ import annotations

import json
import math

import pytest
import torch

from chatcli.engine.loader import load_engine
from chatcli.lora.compare import compare_answer
from chatcli_finetune.args import TrainArgs
from chatcli_finetune.data import Encoder
from chatcli_finetune.report import JsonReporter
from chatcli_finetune.run import run_training
from chatcli_finetune.trainable import TRAIN_NAME, LoRASpec, attach_trainable, lora_pairs, parse_targets
from chatcli_finetune.what_changed import (
    MIN_HELD_OUT, _greedy, _prompts, held_out, lines, measure, prompt_ids,
)  # fmt: skip

QUESTIONS = ["Where is the fox?", "Say a number.", "What is Paris?", "Weather?", "Name a colour.", "Why?"]


def _engine_with_adapter(model_dir, b_scale: float = 0.0, seed: int = 0):
    """The tiny model with a fresh trainable adapter; its B filled with noise of ``b_scale`` (0: the base)."""
    engine = load_engine(str(model_dir), device="cpu")
    attach_trainable(engine.adapters, LoRASpec(4, 8.0, False, parse_targets("all-linear"), None, 0.0), seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pair in lora_pairs(engine.model):
            pair.B.copy_(torch.randn(pair.B.shape, generator=gen) * b_scale)
    return engine


def _items(engine, questions=QUESTIONS):
    enc = Encoder(engine.tokenizer)
    return [enc.conversation([{"role": "user", "content": q}, {"role": "assistant", "content": "Fine."}]) for q in questions]


def test_the_report_uses_compare_maths_and_greedy_changes_are_real(tiny_model_dir):
    engine = _engine_with_adapter(tiny_model_dir, b_scale=0.05)
    model, tok, mgr = engine.model, engine.tokenizer, engine.adapters
    items = _items(engine)
    report = measure(model, tok, mgr, TRAIN_NAME, "sft", items[:2], items[2:])  # 4 held out: the validation split
    assert report["split"] == "validation"
    a = report["answers"]
    assert a["prompts"] == 4
    # Recomputed with /compare's own function on each base greedy answer: the same figures.
    from chatcli.engine.generate import Generator

    gen = Generator(model, tok, weights_version=mgr.weights_version)
    firsts, changed = [], []
    for prompt in _prompts(items[2:]):
        with mgr.override(off=[TRAIN_NAME]):
            base_ids, base_text = _greedy(gen, prompt, tok.eos_ids)
        with mgr.override(on=[TRAIN_NAME]):
            _, adapter_text = _greedy(gen, prompt, tok.eos_ids)
        c = compare_answer(model, mgr, prompt, base_ids, names=[TRAIN_NAME])
        firsts.append(c.steps[0].kl_bits)
        # "changed" is read off the teacher-forced steps; it must agree with the adapter's own greedy answer.
        changed.append(adapter_text != base_text)
    assert a["first_token_kl_bits"] == pytest.approx(sum(firsts) / len(firsts))
    assert a["greedy_changed"] == pytest.approx(sum(changed) / len(changed))
    assert a["base_answer_ppl_base"] >= 1.0 and a["base_answer_ppl_adapter"] >= 1.0
    assert len(a["examples"]) == min(2, sum(changed))


def test_an_untouched_adapter_says_nothing_changed_and_what_to_try(tiny_model_dir):
    engine = _engine_with_adapter(tiny_model_dir, b_scale=0.0)  # B = 0: exactly the base model
    items = _items(engine)
    report = measure(engine.model, engine.tokenizer, engine.adapters, TRAIN_NAME, "sft", items, [])
    a = report["answers"]
    assert report["split"] == "training" and a["first_token_kl_bits"] == 0.0 and a["greedy_changed"] == 0
    assert a["base_answer_ppl_adapter"] == pytest.approx(a["base_answer_ppl_base"])
    assert report["verdict"] == "nothing"
    text = "\n".join(lines(report))
    assert "nothing measurable changed" in text and "--max-steps" in text and "--lr" in text and "more data" in text
    assert "training prompts (too few held out)" in text


def test_an_adapter_that_wrecks_the_model_is_called_out(tiny_model_dir):
    engine = _engine_with_adapter(tiny_model_dir, b_scale=5.0)
    items = _items(engine)
    report = measure(engine.model, engine.tokenizer, engine.adapters, TRAIN_NAME, "sft", items, [])
    a = report["answers"]
    assert a["base_answer_ppl_adapter"] > 4 * a["base_answer_ppl_base"]
    assert report["verdict"] == "drifted" and "lower --lr" in report["advice"]


def test_held_out_prompts_fall_back_to_training_ones_and_are_measured_once(tiny_model_dir):
    engine = load_engine(str(tiny_model_dir), device="cpu")
    items = _items(engine)
    assert held_out(items[:2], items[2:]) == (items[2:], "validation")
    assert held_out(items[: 6 - MIN_HELD_OUT + 1], items[6 - MIN_HELD_OUT + 1 :])[1] == "training"
    p = prompt_ids(items[0])
    assert list(p) == engine.tokenizer.encode_chat([{"role": "user", "content": QUESTIONS[0]}])  # the rendered prompt
    assert len(_prompts(items + items)) == len(QUESTIONS)  # duplicates (DPO pairs share prompts) once


def _prefs(tmp_path, n: int = 6):
    rows = [{"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": f"Good question! {q}"}],
             "rejected": [{"role": "assistant", "content": q}]} for q in QUESTIONS[:n]]  # fmt: skip
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_dpo_run_writes_the_report_and_json_mode_emits_it_before_the_summary(tmp_path, tiny_model_dir, capsys):
    args = TrainArgs(kind="dpo", data=str(_prefs(tmp_path)), out=str(tmp_path / "run"), model=str(tiny_model_dir),
                     val_split=0.0, max_steps=4, lr=5e-3, dropout=0.0, batch_size=3)  # fmt: skip
    r = run_training(args, JsonReporter())
    events = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "defaults" and kinds[1] == "plan" and kinds[-2:] == ["what_changed", "summary"]
    assert "LoRA r 8" in events[0]["lines"][0] and "lr" not in events[0]["lines"][0].split(": ", 1)[1]  # lr given
    report = json.loads((tmp_path / "run" / "what_changed.json").read_text())
    assert events[-2]["lines"] == lines(report) and r["summary"]["what_changed"] == report["verdict"]
    pairs = report["pairs"]
    assert pairs["before"] == {"pairs": 6, "margin": 0.0, "accuracy": 0.5}
    assert pairs["after"]["pairs"] == 6 and pairs["after"]["margin"] > 0 and pairs["after"]["accuracy"] > 0.5
    assert report["answers"]["prompts"] == 6 and math.isfinite(report["answers"]["per_token_kl_bits"])


def test_a_reward_run_reports_pair_accuracy_only(tmp_path, tiny_model_dir):
    args = TrainArgs(kind="reward", data=str(_prefs(tmp_path)), out=str(tmp_path / "rm"), model=str(tiny_model_dir),
                     val_split=0.0, max_steps=6, lr=1e-2, dropout=0.0, batch_size=3)  # fmt: skip
    run_training(args)
    report = json.loads((tmp_path / "rm" / "what_changed.json").read_text())
    assert "answers" not in report and report["pairs"]["pairs"] == 6 and 0.0 <= report["pairs"]["accuracy"] <= 1.0
    assert lines(report)[0].startswith("what changed, on 6 training pairs (too few held out): pair accuracy")


def test_a_failed_measurement_never_costs_the_finished_run(tmp_path, tiny_model_dir, monkeypatch):
    from chatcli.errors import GenerationError
    from chatcli_finetune import what_changed
    from chatcli_finetune.report import QuietReporter

    def broken(*a, **k):
        raise GenerationError("the prompt has 9000 tokens but the context holds 8192")

    monkeypatch.setattr(what_changed, "measure", broken)
    rep = QuietReporter()
    args = TrainArgs(kind="dpo", data=str(_prefs(tmp_path)), out=str(tmp_path / "run"), model=str(tiny_model_dir),
                     val_split=0.0, max_steps=1, dropout=0.0)  # fmt: skip
    r = run_training(args, rep)
    assert r["summary"]["status"] == "finished" and "what_changed" not in r["summary"]
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file() and (tmp_path / "run" / "summary.json").is_file()
    assert not (tmp_path / "run" / "what_changed.json").exists()
    assert any(line.startswith("warning: could not measure what changed (GenerationError: the prompt has") for line in rep.lines)
