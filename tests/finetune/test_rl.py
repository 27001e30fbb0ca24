"""``finetune rl`` on a tiny random model with a rule grader: steps run, groups are logged with
advantages that sum to zero, resume equals uninterrupted, bad input is one line and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from chatcli.errors import ChatcliError, UsageError
from chatcli_finetune.rl.args import RLArgs
from chatcli_finetune.rl.graders import max_words
from chatcli_finetune.rl.groups import GROUPS_NAME, groups_table, last_step
from chatcli_finetune.rl.run import run_rl
from tests.cli_support import run as cli_run

QUESTIONS = ["Where is the fox?", "Say a number.", "What is Paris?", "Weather?", "Who are you?"]
GRADER = "rule:max-words=1"  # the tiny model's answers are 1 to 4 "words": groups differ


def _prompts(tmp: Path, rows=None) -> Path:
    path = tmp / "prompts.jsonl"
    rows = [{"prompt": q} for q in QUESTIONS] if rows is None else rows
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _args(data: Path, out: Path, model: Path, **kw) -> RLArgs:
    base = dict(reward=GRADER, group_size=3, max_new_tokens=6, batch_size=2, val_split=0.0, lr=1e-2, seed=0)
    return RLArgs(kind="rl", data=str(data), out=str(out), model=str(model), **{**base, **kw})


def _groups(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / GROUPS_NAME).read_text(encoding="utf-8").splitlines()]


def test_steps_run_and_every_group_is_logged_with_zero_sum_advantages(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    r = run_rl(_args(_prompts(tmp_path), out, tiny_model_dir, max_steps=3, val_split=0.2))
    s = r["summary"]
    assert s["status"] == "finished" and s["steps"] == 3 and (out / "adapter_model.safetensors").is_file()
    assert not list(out.glob("checkpoint-*"))
    groups = _groups(out)
    assert [g["step"] for g in groups] == [1, 1, 2, 2, 3, 3]  # 4 training prompts, 2 per step
    grade = max_words(1)
    for g in groups:
        assert len(g["answers"]) == 3
        rewards = [a["reward"] for a in g["answers"]]
        assert rewards == [grade([], a["text"]) for a in g["answers"]]  # what the rule says of each text
        assert abs(sum(a["advantage"] for a in g["answers"])) < 1e-6
        if max(rewards) > min(rewards):  # the better answer is pushed up, the worse down
            best = max(g["answers"], key=lambda a: a["reward"])
            worst = min(g["answers"], key=lambda a: a["reward"])
            assert best["advantage"] > 0 > worst["advantage"]
    assert any(len({a["reward"] for a in g["answers"]}) > 1 for g in groups)  # the test teaches something
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for m, step in zip(metrics, (1, 2, 3)):
        mine = [a["reward"] for g in groups if g["step"] == step for a in g["answers"]]
        assert m["reward"] == pytest.approx(sum(mine) / len(mine))
        assert m["kl"] >= 0 and 0 <= m["stopped"] <= 1
    assert metrics[0]["kl"] == pytest.approx(0.0, abs=1e-9)  # B = 0 at the start: the policy is the reference
    assert metrics[-1]["kl"] > 0 and "val_reward" in metrics[-1] and metrics[-1]["val_kl"] >= 0
    assert s["final_reward"] == metrics[-1]["reward"] and s["val_reward"] == metrics[-1]["val_reward"]

    step, last = last_step(out)  # what /finetune groups shows
    assert step == 3 and [g["prompt"] for g in last] == [g["prompt"] for g in groups[-2:]]
    from rich.console import Console

    console = Console(record=True, width=160)
    console.print(groups_table(step, last))
    text = console.export_text()
    assert "step 3" in text and last[0]["prompt"] in text
    arrows = {("↑" if a["advantage"] > 1e-6 else "↓" if a["advantage"] < -1e-6 else "·") for g in last for a in g["answers"]}
    assert all(arrow in text for arrow in arrows)


def test_one_step_pushes_the_better_answers_up(tmp_path, tiny_model_dir, monkeypatch):
    """After one optimizer step, the answers with a positive advantage gained log-probability
    relative to those with a negative one: Σ_i A_i · mean_t log π(y_i,t) rose."""
    from chatcli_finetune.data import collate
    from chatcli_finetune.losses import token_logprobs
    from chatcli_finetune.rl.trainer import RLTrainer

    seen: list = []
    group = RLTrainer._group

    def keep(self, item):
        rows, adv, rec = group(self, item)
        seen.append((rows, adv))
        return rows, adv, rec

    monkeypatch.setattr(RLTrainer, "_group", keep)

    def objective(model, rows, adv) -> float:
        ids, attn, target = collate(rows, 2)
        mask = (target[:, 1:] & attn[:, 1:].bool()).float()
        with torch.no_grad():
            lp = token_logprobs(model, ids, attn)
        return float((torch.tensor(adv) * (lp * mask).sum(-1) / mask.sum(-1)).sum())

    snapshots = []
    r = run_rl(_args(_prompts(tmp_path), tmp_path / "out", tiny_model_dir, max_steps=1, lr=1e-3),
               trainer_hook=lambda trainer, m: snapshots.append(1))  # fmt: skip
    assert snapshots == [1] and len(seen) == 2
    model, manager = r["engine"].model, r["manager"]
    model.eval()
    rows = [x for rows, _ in seen for x in rows]
    adv = [a for _, advs in seen for a in advs]
    assert any(abs(a) > 0.1 for a in adv)
    with manager.disabled(["finetune"]):
        before = objective(model, rows, adv)  # the step started from the base model (B = 0)
    assert objective(model, rows, adv) > before


def test_resume_equals_uninterrupted(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    data = _prompts(tmp_path)
    kw = dict(max_steps=4, save_every=2)
    run_rl(_args(data, tmp_path / "full", tiny_model_dir, **kw))

    def stop_at_2(trainer, m):
        if m["step"] == 2:
            trainer.stop()

    r = run_rl(_args(data, tmp_path / "cut", tiny_model_dir, **kw), trainer_hook=stop_at_2)
    assert r["summary"]["status"] == "stopped" and (tmp_path / "cut" / "checkpoint-2").is_dir()
    with pytest.raises(UsageError, match="--resume with a different --group-size"):
        run_rl(_args(data, tmp_path / "cut", tiny_model_dir, **{**kw, "group_size": 4}), resume=True)
    (tmp_path / "cut" / GROUPS_NAME).open("a").write(json.dumps({"step": 3, "answers": []}) + "\n")  # a step lost in a crash
    run_rl(_args(data, tmp_path / "cut", tiny_model_dir, **kw), resume=True)
    a = load_file(str(tmp_path / "full" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _groups(tmp_path / "cut") == _groups(tmp_path / "full")  # same answers sampled, same rewards


# --- bad input: one line, the right exit code, nothing written ---------------------------------


def _cli(capsys, *argv) -> tuple[int, str]:
    """(exit code, stderr) of ``chatcli finetune rl *argv`` in process (paths given as Path objects too)."""
    code, _, err = cli_run(capsys, "finetune", "rl", *map(str, argv))
    return code, err


def _plain_adapter(tmp: Path, tiny_model_dir: Path) -> Path:
    """A causal-LM LoRA (no score head): a folder that is an adapter but not a reward model."""
    from chatcli.engine.loader import load_engine
    from chatcli_finetune.trainable import TRAIN_NAME, LoRASpec, attach_trainable

    manager = attach_trainable(load_engine(str(tiny_model_dir)).adapters, LoRASpec(rank=2, alpha=4.0), seed=0)
    return manager.save(TRAIN_NAME, tmp / "plain") and tmp / "plain"


@pytest.mark.parametrize("case", ["no prompts", "not a reward model", "unknown grader", "G < 2", "bad rule", "missing file"])
def test_bad_input_is_one_line_and_writes_nothing(case, tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "out"
    prompts, grader, extra = _prompts(tmp_path), GRADER, []
    if case == "no prompts":
        prompts = _prompts(tmp_path, [])
        (tmp_path / "prompts.jsonl").write_text("\n" + json.dumps({"prompt": ""}) + "\n", encoding="utf-8")
    elif case == "not a reward model":
        grader = str(_plain_adapter(tmp_path, tiny_model_dir))
    elif case == "unknown grader":
        grader = "no-such-grader"
    elif case == "G < 2":
        extra = ["--group-size", "1"]
    elif case == "bad rule":
        grader = "rule:max-words=zero"
    else:
        prompts = tmp_path / "missing.jsonl"
    code, err = _cli(capsys, prompts, "--reward", grader, "--out", out, "--model", tiny_model_dir, *extra)
    expected = {"no prompts": 1, "not a reward model": 1, "missing file": 1}.get(case, 2)
    lines = [x for x in err.splitlines() if x.startswith("chatcli: error")]
    assert code == expected and len(lines) == 1, err
    assert {"no prompts": "no prompts in", "not a reward model": "is not a reward model", "unknown grader": "unknown grader",
            "G < 2": "--group-size 1", "bad rule": "rule:max-words", "missing file": "not found"}[case] in lines[0]  # fmt: skip
    assert "Traceback" not in err and not out.exists()


def test_the_grader_is_checked_before_the_model_loads(tmp_path):
    with pytest.raises(ChatcliError, match="no reward model at"):
        run_rl(_args(_prompts(tmp_path), tmp_path / "out", Path("/nonexistent/model"), reward="./missing-rm"))
    assert not (tmp_path / "out").exists()


# --- in the chat: /finetune rl, /finetune groups, the status line -------------------------------


class _Ctx:
    def __init__(self):
        from chatcli.chat.frontend import FrontEnd

        self.frontend = FrontEnd("test")
        self.core = type("Core", (), {"engine": None, "announce": lambda self, event, **fields: None})()
        self.said: list = []

    def say(self, message, kind="info"):
        self.said.append((message, kind))


def test_finetune_groups_shows_the_last_step_and_rl_needs_prompts_and_a_grader(tmp_path, tiny_model_dir, monkeypatch):
    from rich.console import Console

    from chatcli_finetune import command

    monkeypatch.setattr(command, "_RUN", {"current": None})
    ctx = _Ctx()
    with pytest.raises(ChatcliError, match="no rl run in this session"):
        command.finetune_command(ctx, "groups")
    with pytest.raises(UsageError, match="needs a PROMPTS file"):
        command.finetune_command(ctx, "rl")
    with pytest.raises(UsageError, match="needs --reward"):
        command.finetune_command(ctx, f"rl {_prompts(tmp_path)} --max-steps 1")
    assert command.current_run() is None  # nothing started
    out = tmp_path / "out"
    run_rl(_args(_prompts(tmp_path), out, tiny_model_dir, max_steps=1))
    command.finetune_command(ctx, f"groups {out}")
    table, kind = ctx.said[-1]
    console = Console(record=True, width=160)
    console.print(table)
    text = console.export_text()
    assert kind == "result" and text.startswith("step 1:") and sum(q in text for q in QUESTIONS) == 2  # a step's 2 prompts


def test_status_line_of_an_rl_run_shows_reward_and_kl(tmp_path):
    import subprocess
    import sys

    from chatcli_finetune.background import BackgroundRun

    run = BackgroundRun("rl", tmp_path / "p.jsonl", tmp_path / "out", ["--reward", GRADER])
    run.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    run.last = {"step": 2, "total_steps": 8, "loss": 0.0123, "reward": -0.75, "kl": 0.0421, "eta_s": 61}
    try:
        assert run.status_line() == ("finetune rl: step 2/8 loss 0.012 reward -0.750 KL 0.042 ETA 1:01 "
                                     "(answers slower meanwhile)")  # fmt: skip
    finally:
        run.proc.kill()
        run.proc.wait()


def test_finetune_rl_in_the_background_reports_its_settings_and_loads(tmp_path, tiny_model_dir, monkeypatch):
    from chatcli.engine.loader import load_engine
    from chatcli_finetune import command

    monkeypatch.setattr(command, "_RUN", {"current": None})
    ctx = _Ctx()
    ctx.core.engine = load_engine(str(tiny_model_dir), device="cpu")
    ctx.adapters_changed = lambda: None
    out = tmp_path / "bg"
    command.finetune_command(ctx, f"rl {_prompts(tmp_path)} --reward {GRADER} --out {out} --max-steps 2 --group-size 2 "
                                  "--max-new-tokens 4 --val-split 0 --load")  # fmt: skip
    run = command.current_run()
    run.wait(300)
    assert run.finished, run.errors
    assert run.last["reward"] <= 0 and "kl" in run.last  # what the status bar showed while it ran
    said = [str(m) for m, _ in ctx.said]
    assert any("finetune rl: rl settings: 2 steps of 2 prompt(s) x G=2 answers" in s for s in said), said
    assert any(f"finetune rl: grader: {GRADER}" in s for s in said)
    assert any("loaded adapter bg" in s for s in said) and "bg" in ctx.core.engine.adapters
    assert len(last_step(out)[1]) == 2


def test_the_rl_command_lets_openmp_threads_sleep_unless_told(tmp_path, tiny_model_dir, capsys, monkeypatch):
    import os

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    code, _, _ = cli_run(capsys, "finetune", "rl", str(_prompts(tmp_path)), "--reward", GRADER, "--out", str(tmp_path / "run"),
                         "--model", str(tiny_model_dir), "--max-steps", "1", "--group-size", "2", "--max-new-tokens", "3",
                         "--val-split", "0", "--json")  # fmt: skip
    assert code in (0, None)
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
