"""`chatcli rank stats --reward DIR`: a trained reward model's agreement with the person's pairs, split
by what the run recorded in DIR/data_split.json (trained / held out / unseen)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatcli_finetune.args import TrainArgs
from chatcli_finetune.outdir import SPLIT_NAME, pair_key, read_split, record_pair_key
from chatcli_finetune.run import run_training
from chatcli_rank.export import records
from chatcli_rank.ranking import Ranking
from chatcli_rank.reward_agreement import ranking_agreement, reward_agreement
from chatcli_rank.store import RankStore
from tests.rank_support import conversation, store_ranking

GOOD = ["The fox is near the river bank.", "Paris is the capital of France.", "Twelve and seven.",
        "Blue, like the sea.", "A cat sat on the mat.", "Tea is a warm drink."]  # fmt: skip
BAD = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def ranked(tmp_path_factory, tiny_model_dir):
    """A store with six ranked questions (good answer over BAD), a reward model trained on them with two held out."""
    tmp = tmp_path_factory.mktemp("agreement")
    store_path = tmp / "r.sqlite3"
    with RankStore.open(store_path) as store:
        for k, good in enumerate(GOOD):
            store_ranking(store, [good, BAD], [[0], [1]], messages=conversation(f"question {k}?"))
        rows = list(records(store.items(), "reward"))
    data = tmp / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = TrainArgs(kind="reward", data=str(data), out=str(tmp / "rm"), model=str(tiny_model_dir), rank=4, alpha=8.0,
                     dropout=0.0, val_split=0.34, batch_size=4, schedule="constant", seed=0, max_steps=20, lr=5e-3)  # fmt: skip
    result = run_training(args)
    return store_path, Path(result["summary"]["out"]), result


def test_the_run_records_its_split_as_pair_keys_the_store_can_compute(ranked):
    store_path, out, result = ranked
    split = read_split(out)
    assert split["val_lines"] == sorted(p.line for p in result["val"]) and len(split["val_lines"]) == 2
    assert len(split["train_pairs"]) == 4 and len(split["val_pairs"]) == 2
    # The key of a record equals the key the store side computes from the ranking (whitespace aside).
    record = {"prompt": [{"role": "user", "content": "q?"}], "chosen": [{"role": "assistant", "content": "a  b"}],
              "rejected": [{"role": "assistant", "content": "c"}]}  # fmt: skip
    assert record_pair_key(record) == pair_key([{"role": "user", "content": "q?"}], "a b", "c")
    implicit = {"chosen": record["prompt"] + record["chosen"], "rejected": record["prompt"] + record["rejected"]}
    assert record_pair_key(implicit) == record_pair_key(record)
    assert record_pair_key({"messages": []}) is None


def test_agreement_over_all_trained_and_held_out_pairs(ranked, tiny_model_dir):
    store_path, out, result = ranked
    with RankStore.open(store_path) as store:
        got = reward_agreement(store, out, device="cpu")
    assert got["split_recorded"] and got["base_model"] == str(tiny_model_dir)
    assert got["all"]["pairs"] == 6 and got["trained"]["pairs"] == 4 and got["held_out"]["pairs"] == 2
    assert got["unseen"]["pairs"] == 0
    # Held-out accuracy is the run's own validation accuracy: the same pairs, the same scores.
    assert got["held_out"]["accuracy"] == pytest.approx(result["summary"]["val_accuracy"])
    agree = sum(got[b]["agree"] for b in ("trained", "held_out"))
    assert got["all"]["agree"] == agree and got["all"]["accuracy"] == pytest.approx(agree / 6)
    assert len(got["disagreements"]) == 6 - agree
    assert all(d["reward_chosen"] <= d["reward_rejected"] for d in got["disagreements"])


def test_pairs_ranked_after_training_are_unseen_and_the_cli_prints_them(ranked, tmp_path):
    store_path, out, _ = ranked
    copy = tmp_path / "r.sqlite3"
    with RankStore.open(store_path) as src, RankStore.open(copy) as dst:
        for item in src.items():
            sid = dst.add_set(item.messages, item.candidates)
            dst.add_ranking(sid, item.ranking)
        store_ranking(dst, ["A new answer.", BAD], [[0], [1]], messages=conversation("a new question?"))
    from chatcli_rank.cli import rank_app

    r = CliRunner().invoke(rank_app, ["stats", "--json", "--store", str(copy), "--reward", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output[r.output.index("{"):])
    assert data["reward_agreement"]["unseen"]["pairs"] == 1 and data["reward_agreement"]["all"]["pairs"] == 7
    r = CliRunner().invoke(rank_app, ["stats", "--store", str(copy), "--reward", str(out), "--device", "cpu"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "agrees with your pairs" in r.output and "held-out" in r.output and "unseen" in r.output


def test_a_run_without_a_recorded_split_gets_the_accuracy_over_all_pairs(ranked, tmp_path):
    store_path, out, _ = ranked
    old = tmp_path / "old-rm"
    old.mkdir()
    for f in out.iterdir():
        if f.is_file() and f.name != SPLIT_NAME:
            (old / f.name).write_bytes(f.read_bytes())
    with RankStore.open(store_path) as store:
        got = reward_agreement(store, old, device="cpu")
    assert not got["split_recorded"] and got["held_out"] is None and got["all"]["pairs"] == 6


def test_reward_dir_errors_are_one_line(ranked, tmp_path):
    from chatcli.errors import UsageError

    store_path, _, _ = ranked
    with RankStore.open(store_path) as store:
        with pytest.raises(UsageError, match="no reward model at"):
            reward_agreement(store, tmp_path / "missing")
        (tmp_path / "empty").mkdir()
        with pytest.raises(UsageError, match="add --model"):
            reward_agreement(store, tmp_path / "empty")
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / SPLIT_NAME).write_text("[1, 2]")
        with pytest.raises(UsageError, match="not what 'chatcli finetune' wrote"):
            reward_agreement(store, tmp_path / "bad")


def test_ranking_agreement_counts_the_pairs_the_rewards_order_the_same_way():
    r = Ranking(((2,), (0, 1), (3,)))  # 3 > 1 = 2 > 4: pairs 2>0, 2>1, 2>3, 0>3, 1>3
    agree, total, against = ranking_agreement(r, [0.5, -1.0, 2.0, 0.0])
    assert (agree, total) == (4, 5) and against == [(1, 3)]
    assert ranking_agreement(r, [None, None, 1.0, 0.0]) == (1, 1, [])  # unscored answers leave their pairs out
    assert ranking_agreement(Ranking(((0, 1),), "all_bad"), [1.0, 0.0]) == (0, 0, [])


def test_the_report_lists_where_the_model_disagrees_most():
    from rich.console import Console

    from chatcli_rank.reward_agreement import render_agreement

    tally = {"pairs": 2, "agree": 1, "accuracy": 0.5}
    data = {"reward_dir": "runs/rm", "reward_model": "rm", "base_model": "m", "split_recorded": False, "all": tally,
            "trained": None, "held_out": None, "unseen": None, "unscorable_rankings": 1,
            "disagreements": [{"set_id": 4, "question": "q [b]?", "chosen": "[red]mine", "rejected": "theirs",
                               "reward_chosen": -0.5, "reward_rejected": 1.25, "split": "unseen"}]}  # fmt: skip
    console = Console(record=True, width=160)
    render_agreement(console, data)
    text = console.export_text()
    assert "all          50.0%  (1 of 2 pairs)" in text and "recorded no data split" in text
    assert "[red]mine" in text and "-0.50 vs +1.25" in text and "1 ranking(s) could not be scored" in text
