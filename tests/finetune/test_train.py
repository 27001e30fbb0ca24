"""Fine-tuning on a tiny random model: SFT overfits and reproduces, DPO and the reward model learn
the preference, the adapter loads in PEFT with identical logits, resume equals uninterrupted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from chatcli.lora.manager import AdapterManager
from chatcli.hub.checkpoint import load_checkpoint
from chatcli.tokenizer.tokenizer import ChatTokenizer
from chatcli.errors import UsageError
from chatcli_finetune.args import TrainArgs
from chatcli_finetune.run import run_training
from tests.tiny import EOS_ID, load_hf_oracle

QA = [("Where is the fox?", "The fox is near the river bank."), ("Say a number.", "12345 and 67890."),
      ("What is Paris?", "Paris is the capital of France."), ("Weather?", "Sunny with a chance of rain.")]  # fmt: skip


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _sft_data(tmp: Path) -> Path:
    return _jsonl(tmp / "sft.jsonl", [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in QA])


def _pref_data(tmp: Path) -> Path:
    rows = [{"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": a}],
             "rejected": [{"role": "assistant", "content": "The quick brown fox jumps over the lazy dog."}]} for q, a in QA]  # fmt: skip
    return _jsonl(tmp / "prefs.jsonl", rows)


def _args(kind: str, data: Path, out: Path, model: Path, **kw) -> TrainArgs:
    base = dict(rank=4, alpha=8.0, dropout=0.0, val_split=0.0, batch_size=2, schedule="constant", seed=0)
    return TrainArgs(kind=kind, data=str(data), out=str(out), model=str(model), **{**base, **kw})


def _greedy(model, tok: ChatTokenizer, question: str, n: int = 24) -> str:
    ids = tok.encode_chat([{"role": "user", "content": question}])
    out: list[int] = []
    model.eval()
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(torch.tensor([ids + out]))[0, -1].argmax())
            if nxt == EOS_ID:
                break
            out.append(nxt)
    return tok.decode(out)


def test_sft_overfits_and_reproduces_a_training_answer(tmp_path, tiny_model_dir):
    r = run_training(_args("sft", _sft_data(tmp_path), tmp_path / "out", tiny_model_dir, max_steps=40, lr=1e-2))
    losses = [json.loads(x)["loss"] for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 40 and losses[-1] < 0.1 * losses[0]
    assert _greedy(r["model"], r["tokenizer"], QA[0][0]) == QA[0][1]
    with r["manager"].disabled():
        assert _greedy(r["model"], r["tokenizer"], QA[0][0]) != QA[0][1]
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "training_args.json", "metrics.jsonl", "loss.png"} <= files
    assert (tmp_path / "out" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cfg = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(tiny_model_dir) and cfg["r"] == 4
    # A rerun into the same folder is refused; --overwrite replaces it.
    with pytest.raises(UsageError, match="already exists"):
        run_training(_args("sft", tmp_path / "sft.jsonl", tmp_path / "out", tiny_model_dir, max_steps=1))


def test_trained_adapter_loads_in_peft_with_identical_logits(tmp_path, tiny_model_dir):
    from peft import PeftModel

    run_training(_args("sft", _sft_data(tmp_path), tmp_path / "out", tiny_model_dir, max_steps=5, lr=1e-2, targets="q_proj,v_proj,down_proj"))
    ours = load_checkpoint(tiny_model_dir)
    AdapterManager(ours).load(tmp_path / "out")
    hf = PeftModel.from_pretrained(load_hf_oracle(tiny_model_dir), str(tmp_path / "out")).eval()
    ids = torch.tensor([[1, 40, 77, 123, 9, 250, 31, 2, 5]])
    with torch.no_grad():
        a, b = ours(ids), hf(ids).logits
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    assert not torch.allclose(a, load_checkpoint(tiny_model_dir)(ids), atol=1e-3)  # the adapter does something


def _pair_margins(r) -> torch.Tensor:
    from chatcli_finetune.data import collate
    from chatcli_finetune.losses import sequence_logps

    model, pairs = r["model"], r["train"]
    ids, attn, tgt = collate([p.chosen for p in pairs] + [p.rejected for p in pairs], EOS_ID)
    model.eval()
    with torch.no_grad():
        pol = sequence_logps(model, ids, attn, tgt)
        with r["manager"].disabled():
            ref = sequence_logps(model, ids, attn, tgt)
    P = len(pairs)
    return (pol[:P] - pol[P:]) - (ref[:P] - ref[P:])


def test_dpo_increases_the_chosen_over_rejected_margin(tmp_path, tiny_model_dir):
    r = run_training(_args("dpo", _pref_data(tmp_path), tmp_path / "out", tiny_model_dir, max_steps=15, lr=5e-3, beta=0.1))
    margins = _pair_margins(r)  # policy margin minus reference margin: 0 before training
    assert (margins > 1.0).all(), margins
    steps = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert steps[0]["margin"] == pytest.approx(0.0, abs=1e-5) and steps[-1]["accuracy"] == 1.0
    assert steps[-1]["loss"] < 0.5 * steps[0]["loss"]


def test_reward_model_ranks_training_pairs_and_round_trips_as_seq_cls(tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from chatcli_finetune.data import collate
    from chatcli_finetune.losses import rewards

    r = run_training(_args("reward", _pref_data(tmp_path), tmp_path / "out", tiny_model_dir, max_steps=25, lr=5e-3))
    pairs = r["train"]
    ids, attn, _ = collate([p.chosen for p in pairs] + [p.rejected for p in pairs], EOS_ID)
    with torch.no_grad():
        rw = rewards(r["model"].eval(), r["head"], ids, attn)
    assert (rw[: len(pairs)] > rw[len(pairs):]).all(), rw

    cfg = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert cfg["task_type"] == "SEQ_CLS" and cfg["modules_to_save"] == ["score"]
    # chatcli's loader reads it back (LoRA + head) ...
    ours = load_checkpoint(tiny_model_dir)
    manager = AdapterManager(ours)
    manager.load(tmp_path / "out", name="rm")
    head = torch.nn.Linear(ours.config.hidden_size, 1, bias=False)
    head.weight.data = manager.adapter("rm").heads["score"]
    # ... and PEFT's sequence classifier gives the same scores (pad id 0 is not in the text).
    hf = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1, pad_token_id=0, dtype=torch.float32)
    hf = PeftModel.from_pretrained(hf, str(tmp_path / "out")).eval()
    one = torch.tensor([pairs[0].chosen.ids])
    with torch.no_grad():
        ours_score = rewards(ours.eval(), head, one, torch.ones_like(one))
        hf_score = hf(one).logits[:, 0]
    assert torch.allclose(ours_score, hf_score, atol=1e-4), (ours_score, hf_score)


def test_resume_equals_uninterrupted(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    data = _sft_data(tmp_path)
    kw = dict(max_steps=8, lr=5e-3, save_every=3, dropout=0.1, batch_size=1, grad_accum=2, schedule="cosine", warmup=2)
    run_training(_args("sft", data, tmp_path / "full", tiny_model_dir, **kw))

    def stop_at_5(trainer, m):
        if m["step"] == 5:
            trainer.stop()

    r = run_training(_args("sft", data, tmp_path / "cut", tiny_model_dir, **kw), trainer_hook=stop_at_5)
    assert r["summary"]["status"] == "stopped" and (tmp_path / "cut" / "checkpoint-5").is_dir()
    assert not (tmp_path / "cut" / "adapter_model.safetensors").exists()
    with pytest.raises(UsageError, match="--resume with a different --rank"):
        run_training(_args("sft", data, tmp_path / "cut", tiny_model_dir, **{**kw, "rank": 8}), resume=True)
    run_training(_args("sft", data, tmp_path / "cut", tiny_model_dir, **kw), resume=True)
    a = load_file(str(tmp_path / "full" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(x)["step"] for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


def test_grad_accumulation_equals_a_bigger_batch(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    data = _sft_data(tmp_path)
    run_training(_args("sft", data, tmp_path / "big", tiny_model_dir, max_steps=4, lr=5e-3, batch_size=4))
    run_training(_args("sft", data, tmp_path / "acc", tiny_model_dir, max_steps=4, lr=5e-3, batch_size=1, grad_accum=4))
    a = load_file(str(tmp_path / "big" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "acc" / "adapter_model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
