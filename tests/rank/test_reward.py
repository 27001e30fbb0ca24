"""Reward scores in the ranking store: the v1 -> v2 migration, round trips, stats, and exports that stay TRL-exact."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace

from chatcli.chat.sqlite_util import open_db
from chatcli_rank.candidates import Candidate
from chatcli_rank.export import records
from chatcli_rank.ranking import Ranking
from chatcli_rank.stats import compute_stats
from chatcli_rank.store import MIGRATIONS, SCHEMA_VERSION, RankStore, RankStoreError
from tests.rank_support import candidates, conversation, store_ranking


def _old_store(path) -> None:
    """A store as the first schema wrote it: one ranked set, no reward columns."""
    conn = open_db(path, what="old store", error=RankStoreError, migrations=MIGRATIONS[:1])
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.execute("INSERT INTO prompts(hash, messages, created) VALUES ('h', ?, 1.0)", (json.dumps(conversation()),))
    conn.execute("INSERT INTO candidate_sets(prompt_id, source, model, created) VALUES (1, 'chat', '{\"name\": \"old\"}', 1.0)")
    for i, text in enumerate(["old answer a", "old answer b"]):
        conn.execute(
            "INSERT INTO candidates(set_id, idx, text, seed, params, tokens, mean_prob, mean_model_prob)"
            " VALUES (1, ?, ?, ?, '{}', 3, 0.5, 0.4)", (i, text, 7 + i),
        )
    conn.execute("INSERT INTO rankings(set_id, status, tiers, created) VALUES (1, 'ranked', '[[1],[0]]', 2.0)")
    conn.close()


def test_a_store_from_the_old_schema_opens_migrates_and_keeps_its_rankings(tmp_path):
    path = tmp_path / "rankings.sqlite3"
    _old_store(path)
    with RankStore.open(path) as store:
        assert SCHEMA_VERSION == 3
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == 3
        [old] = store.items()
        assert [c.text for c in old.candidates] == ["old answer a", "old answer b"]
        assert [c.reward for c in old.candidates] == [None, None] and old.reward_model is None
        assert [c.existing for c in old.candidates] == [False, False]  # version 3's mark defaults to "sampled"
        assert old.ranking.tiers == ((1,), (0,)) and old.model == {"name": "old"}
        # New sets carry scores beside the migrated one.
        scored = [replace(c, reward=r) for c, r in zip(candidates(["new a", "new b"]), [1.25, -0.5])]
        sid = store.add_set(conversation("new?"), scored, model={"name": "m"}, reward_model="rm")
        store.add_ranking(sid, Ranking(((0,), (1,)), "ranked"))
        assert store.integrity_ok()
    with RankStore.open(path) as store:  # already at version 3: opening again changes nothing
        old, new = store.items()
        assert [c.reward for c in new.candidates] == [1.25, -0.5] and new.reward_model == "rm"
        assert [c.reward for c in old.candidates] == [None, None]


def test_a_store_newer_than_this_chatcli_is_refused(tmp_path):
    path = tmp_path / "rankings.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    try:
        RankStore.open(path)
    except RankStoreError as e:
        assert "newer than this chatcli" in e.message and "\n" not in e.message
    else:
        raise AssertionError("a newer schema opened")


def test_candidate_json_keeps_its_layout_unless_scored():
    plain = candidates(["x"])[0]
    assert "reward" not in plain.to_json()  # queue files of `chatcli rank generate` are unchanged
    scored = replace(plain, reward=0.75)
    assert scored.to_json()["reward"] == 0.75
    assert Candidate.from_json(0, scored.to_json()).reward == 0.75
    assert Candidate.from_json(0, {"text": "t", "reward": "high"}).reward is None  # not a number: no score


def test_stats_count_scored_sets_and_exports_keep_trl_keys(tmp_path):
    with RankStore.open(tmp_path / "r.sqlite3") as store:
        store_ranking(store, ["a", "b"], [[0], [1]])  # unscored
        scored = [replace(c, reward=r) for c, r in zip(candidates(["c", "d", "e"]), [2.0, 1.0, 0.0])]
        sid = store.add_set(conversation("scored?"), scored, model={"name": "m1"}, reward_model="rm")
        store.add_ranking(sid, Ranking(((1,), (0,), (2,)), "ranked"))
        stats = compute_stats(store)
        assert stats["scored_sets"] == 1 and stats["reward_models"] == {"rm": 1}
        assert stats["per_model"] == {"m1": {"rankings": 2, "pairs": 4, "skipped": 0}}
        items = store.items()
        # Scores stay out of the training files: TRL's formats and OASST trees keep their exact keys.
        for fmt, keys in [("dpo", {"prompt", "chosen", "rejected"}), ("kto", {"prompt", "completion", "label"}),
                          ("sft", {"messages"})]:  # fmt: skip
            assert {frozenset(r) for r in records(items, fmt)} == {frozenset(keys)}
        tree = next(records(items[1:], "oasst"))
        replies = tree["prompt"]["replies"]
        assert all("reward" not in json.dumps(r) for r in replies) and [r["text"] for r in replies] == ["d", "c", "e"]
