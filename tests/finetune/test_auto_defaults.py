"""The settings a run chooses from its data: the rule, flags that always win, and a resumed run keeping them."""

from __future__ import annotations

import json
import math

import pytest

from chatcli_finetune.args import DEFAULT_LR, TrainArgs
from chatcli_finetune.auto_defaults import LR_AREA, LR_MAX, MIN_STEPS, choose, resolve, schedule_area
from chatcli_finetune.run import run_training

SMALL = 135_000_000  # the default model's size: the areas were measured there


def _args(kind: str, **kw) -> TrainArgs:
    return TrainArgs(kind=kind, data="d.jsonl", out="o", **kw)


def test_flags_not_given_are_none_until_the_data_is_known():
    a = _args("dpo")
    assert (a.lr, a.epochs, a.rank, a.alpha, a.targets) == (None, None, None, None, None)
    assert a.unresolved() == ["lr", "epochs", "rank", "alpha", "targets"]
    assert _args("dpo", lr=1e-3, rank=4).unresolved() == ["epochs", "alpha", "targets"]


def test_a_small_preference_set_gets_enough_steps_and_a_rate_that_moves_the_model():
    c = choose(_args("dpo"), 14, 1_700, SMALL)  # 16 pairs, 2 held out, batch 4: 4 steps an epoch
    assert (c.epochs, c.steps) == (2.0, 8)
    assert c.lr == pytest.approx(LR_AREA["dpo"] / schedule_area(8, _args("dpo")))  # 1e-3 / 4.5
    assert schedule_area(8, _args("dpo")) == pytest.approx(4.5)
    assert DEFAULT_LR["dpo"] < c.lr < LR_MAX["dpo"]
    assert (c.rank, c.alpha, c.targets) == (8, 16.0, "all-linear")


def test_tiny_data_gets_more_epochs_and_plentiful_data_trains_as_usual():
    tiny = choose(_args("sft"), 3, 300, SMALL)  # one step an epoch
    assert tiny.steps == MIN_STEPS["sft"] and tiny.epochs == MIN_STEPS["sft"]
    big = choose(_args("sft"), 5_000, 2_000_000, SMALL)
    assert big.epochs == 3.0 and big.steps == 3 * 1250
    assert big.lr == DEFAULT_LR["sft"]  # many steps: the usual rate is the floor
    assert (big.rank, big.alpha) == (16, 32.0)
    # Very long examples: the raised epochs stop at the token cap.
    capped = choose(_args("sft"), 2, 60_000, SMALL)
    assert capped.epochs == 3.0


def test_the_rate_follows_the_steps_the_person_asked_for_and_bigger_models_step_smaller():
    ten = choose(_args("dpo", max_steps=10), 40, 5_000, SMALL)
    assert ten.steps == 10 and ten.lr == pytest.approx(LR_AREA["dpo"] / schedule_area(10, _args("dpo")))
    constant = choose(_args("dpo", max_steps=10, schedule="constant"), 40, 5_000, SMALL)
    assert constant.lr == pytest.approx(LR_AREA["dpo"] / 10)  # the area under a flat schedule is the step count
    two = choose(_args("dpo", max_steps=2), 40, 5_000, SMALL)
    assert two.lr == LR_MAX["dpo"]  # never faster than the ceiling
    big_model = choose(_args("dpo"), 14, 1_700, 100 * SMALL)
    assert big_model.lr == pytest.approx(choose(_args("dpo"), 14, 1_700, SMALL).lr / 10)


def test_a_given_flag_always_wins_and_is_not_explained():
    given = _args("sft", lr=3e-5, epochs=1.0, rank=2, alpha=3.0, targets="q_proj")
    assert resolve(given, 3, 300, SMALL) == (given, [])
    args, lines = resolve(_args("sft", lr=3e-5), 3, 300, SMALL)
    assert args.lr == 3e-5 and args.epochs == MIN_STEPS["sft"] and args.rank == 8
    assert len(lines) == 2 and "lr" not in lines[0].split(": ", 1)[1] and "16 epochs = 16 steps" in lines[0]
    assert lines[0].startswith("chosen from the data (3 training examples, 300 tokens, a 135M model)")
    assert lines[1].startswith("why: 1 step(s) an epoch")


def _prefs(tmp_path, n: int = 6):
    rows = [{"prompt": [{"role": "user", "content": f"Question {i}?"}],
             "chosen": [{"role": "assistant", "content": f"Good question! Answer {i}."}],
             "rejected": [{"role": "assistant", "content": f"Answer {i}."}]} for i in range(n)]  # fmt: skip
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_run_records_what_it_chose_and_a_resume_keeps_it(tmp_path, tiny_model_dir):
    data = _prefs(tmp_path)
    args = TrainArgs(kind="dpo", data=str(data), out=str(tmp_path / "run"), model=str(tiny_model_dir), val_split=0.0,
                     dropout=0.0, batch_size=2, save_every=2)  # fmt: skip

    def stop_at_2(trainer, m):
        if m["step"] == 2:
            trainer.stop()

    r = run_training(args, trainer_hook=stop_at_2)
    saved = json.loads((tmp_path / "run" / "training_args.json").read_text())
    want = choose(args, 6, sum(len(p.chosen.ids) + len(p.rejected.ids) for p in r["train"]), 10**6)
    assert r["summary"]["status"] == "stopped" and saved["lr"] == pytest.approx(want.lr)
    assert (saved["epochs"], saved["rank"], saved["alpha"], saved["targets"]) == (want.epochs, 8, 16.0, "all-linear")
    assert r["summary"]["total_steps"] == want.steps == math.ceil(want.epochs * 3)
    # Resumed with no flags: the run continues with the settings it chose, not new ones.
    again = TrainArgs(kind="dpo", data=str(data), out=str(tmp_path / "run"), model=str(tiny_model_dir), val_split=0.0,
                      dropout=0.0, batch_size=2, save_every=2)  # fmt: skip
    done = run_training(again, resume=True)
    assert done["summary"]["status"] == "finished"
    assert json.loads((tmp_path / "run" / "training_args.json").read_text())["lr"] == saved["lr"]


def _sft(tmp_path, n: int = 4):
    rows = [{"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]}
            for i in range(n)]  # fmt: skip
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("preset", [None, "ACTIVE"])
def test_the_cli_leaves_settings_to_the_data_and_lets_openmp_threads_sleep(tmp_path, tiny_model_dir, capsys, monkeypatch,
                                                                          preset):  # fmt: skip
    from chatcli.cli.main import main

    if preset is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", preset)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(["finetune", "sft", str(_sft(tmp_path)), "--out", str(out), "--model", str(tiny_model_dir), "--max-steps", "2",
              "--val-split", "0", "--json"])  # fmt: skip
    assert exc.value.code in (0, None)
    events = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert events[0]["event"] == "defaults" and "lr " in events[0]["lines"][0]
    saved = json.loads((out / "training_args.json").read_text())
    assert saved["lr"] is not None and saved["rank"] == 8 and saved["max_steps"] == 2
    import os

    assert os.environ["OMP_WAIT_POLICY"] == (preset or "PASSIVE")  # a value the person set wins
