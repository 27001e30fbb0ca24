"""Rank exports: each format's exact keys, pairs that follow the ranking, ties and all-bad, and the CLI."""

from __future__ import annotations

import json

import pytest

from chatcli.errors import UsageError
from chatcli_rank.export import pairs, records
from chatcli_rank.ranking import Ranking
from chatcli_rank.store import RankStore, default_path
from tests.cli_support import run as run_cli
from tests.rank_support import conversation, store_ranking

TEXTS = ["A", "B", "C", "D"]


def R(*tiers, status="ranked") -> Ranking:
    return Ranking(tuple(tuple(t) for t in tiers), status)


def test_pairs_follow_the_tiers_and_ties_make_none():
    r = R([2], [0], [3], [1])  # C > A > D > B
    assert pairs(r, "all") == [(2, 0), (2, 3), (2, 1), (0, 3), (0, 1), (3, 1)]
    assert pairs(r, "adjacent") == [(2, 0), (0, 3), (3, 1)]
    assert pairs(r, "best-vs-rest") == [(2, 0), (2, 3), (2, 1)]
    tied = R([2], [0, 3], [1])  # A and D tied: never a pair with each other
    assert pairs(tied, "all") == [(2, 0), (2, 3), (2, 1), (0, 1), (3, 1)]
    assert pairs(tied, "adjacent") == [(2, 0), (2, 3), (0, 1), (3, 1)]
    assert pairs(R([0, 1, 2, 3]), "all") == []
    assert pairs(R([0], [1], [2], [3], status="all_bad"), "all") == []
    assert pairs(R([0], [1], status="skipped"), "all") == []
    with pytest.raises(UsageError, match="unknown --pairs"):
        pairs(r, "some")


@pytest.fixture
def store():
    s = RankStore.open(default_path())
    history = [("Hi", "Hello!")]
    msgs = conversation("Best fruit?", system="Be brief.", history=history)
    store_ranking(s, TEXTS, [[2], [0, 3], [1]], messages=msgs, model="m1", note="C is clearly best")
    store_ranking(s, ["x", "y"], [[0], [1]], status="all_bad", messages=conversation("Q2"), model="m2")
    store_ranking(s, ["p", "q"], [[0], [1]], status="skipped", messages=conversation("Q3"), model="m1")
    yield s
    s.close()


def test_dpo_and_reward_records_have_exactly_trl_keys(store):
    items = store.items()
    assert [i.ranking.status for i in items] == ["ranked", "all_bad"]  # skipped never exports
    prompt = [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Best fruit?"},
    ]
    for fmt in ("dpo", "reward"):
        rows = list(records(items, fmt, "all"))
        assert all(list(r) == ["prompt", "chosen", "rejected"] for r in rows)
        assert all(r["prompt"] == prompt for r in rows)
        got = [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows]
        assert got == [("C", "A"), ("C", "D"), ("C", "B"), ("A", "B"), ("D", "B")]  # all-bad adds none
        assert all(r["chosen"] == [{"role": "assistant", "content": r["chosen"][0]["content"]}] for r in rows)
    adjacent = [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in records(items, "dpo", "adjacent")]
    assert adjacent == [("C", "A"), ("C", "D"), ("A", "B"), ("D", "B")]


def test_kto_sft_and_oasst(store):
    items = store.items()
    kto = list(records(items, "kto"))
    assert all(list(r) == ["prompt", "completion", "label"] for r in kto)
    labels = [(r["completion"][0]["content"], r["label"]) for r in kto]
    assert labels == [("C", True), ("A", False), ("D", False), ("B", False), ("x", False), ("y", False)]
    assert kto[-1]["prompt"] == [{"role": "user", "content": "Q2"}]

    sft = list(records(items, "sft"))
    assert len(sft) == 1 and list(sft[0]) == ["messages"]
    assert sft[0]["messages"][-1] == {"role": "assistant", "content": "C"}
    assert sft[0]["messages"][:-1][-1] == {"role": "user", "content": "Best fruit?"}

    trees = list(records(items, "oasst"))
    assert len(trees) == 2
    t = trees[0]
    assert t["tree_state"] == "ready_for_export" and t["system"] == "Be brief." and t["note"] == "C is clearly best"
    root = t["prompt"]
    assert (root["role"], root["text"], root["parent_id"]) == ("prompter", "Hi", None)
    second = root["replies"][0]
    assert (second["role"], second["text"], second["parent_id"]) == ("assistant", "Hello!", root["message_id"])
    question = second["replies"][0]
    assert question["role"] == "prompter" and question["text"] == "Best fruit?"
    answers = question["replies"]
    assert [(a["text"], a["rank"]) for a in answers] == [("C", 0), ("A", 1), ("D", 1), ("B", 2)]  # rank 0 = best
    assert all(a["parent_id"] == question["message_id"] and a["synthetic"] and a["model_name"] == "m1" for a in answers)
    assert set(answers[0]) == {"message_id", "parent_id", "role", "text", "rank", "synthetic", "model_name", "replies"}
    bad = trees[1]
    assert bad["all_bad"] is True and [a["rank"] for a in bad["prompt"]["replies"]] == [None, None]


def test_the_latest_ranking_of_a_set_is_the_one_exported():
    s = RankStore.open(default_path())
    set_id = store_ranking(s, ["a", "b"], [[0], [1]])
    s.add_ranking(set_id, R([1], [0]))  # the person changed their mind
    rows = list(records(s.items(), "dpo"))
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows] == [("b", "a")]
    assert s.counts()["submissions"] == 2


def test_export_and_stats_commands(store, tmp_path, capsys):
    out = tmp_path / "dpo.jsonl"
    code, _, err = run_cli(capsys, "rank", "export", "--format", "dpo", "--pairs", "best-vs-rest", "-o", str(out))
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows] == [("C", "A"), ("C", "D"), ("C", "B")]
    assert "wrote 3 dpo record(s) from 2 ranking(s)" in err
    code, out_text, _ = run_cli(capsys, "rank", "export", "-f", "sft", "-o", "-")
    assert code == 0 and json.loads(out_text)["messages"][-1]["content"] == "C"
    code, _, err = run_cli(capsys, "rank", "export", "--format", "csv", "-o", str(out))
    assert code == 2 and err.count("\n") == 1 and "unknown --format 'csv'" in err
    assert len(out.read_text().splitlines()) == 3  # a refused export leaves the old file alone

    code, out_text, _ = run_cli(capsys, "rank", "stats", "--json")
    stats = json.loads(out_text)
    assert code == 0
    assert (stats["prompts"], stats["rankings"], stats["ranked"], stats["all_bad"], stats["skipped"]) == (3, 2, 1, 1, 1)
    assert stats["pairs"] == 5 and stats["ties"] == 1 and stats["with_note"] == 1
    assert stats["per_model"] == {"m1": {"rankings": 1, "pairs": 5, "skipped": 1}, "m2": {"rankings": 1, "pairs": 0, "skipped": 0}}
    code, out_text, _ = run_cli(capsys, "rank", "stats")
    assert code == 0 and "pairs" in out_text and "m2" in out_text
