"""The person's consistency: Kendall's τ, contradictions across rankings, and what `rank stats` reports."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from chatcli_rank.consistency import conflicts, contradictions, judgements, kendall_tau, normalise, repeated_prompts
from chatcli_rank.ranking import Ranking
from chatcli_rank.stats import compute_stats
from chatcli_rank.store import RankStore
from tests.rank_support import conversation, store_ranking

# scipy.stats.kendalltau(x, y).statistic (scipy 1.17.1, tau-b), computed once and pasted here.
SCIPY_TAU = [
    ([0, 1, 2, 3], [0, 1, 2, 3], 1.0),
    ([0, 1, 2, 3], [3, 2, 1, 0], -1.0),
    ([0, 1, 2, 3], [1, 0, 2, 3], 0.6666666666666669),
    ([0, 0, 1, 2], [0, 1, 1, 2], 0.7999999999999999),
    ([0, 1, 1, 2, 3], [2, 0, 1, 1, 3], 0.2222222222222222),
    ([0, 0, 1], [1, 0, 0], -0.49999999999999994),
]


@pytest.mark.parametrize("x,y,expected", SCIPY_TAU)
def test_kendall_tau_b_matches_scipy(x, y, expected):
    assert kendall_tau(x, y) == pytest.approx(expected, abs=1e-12)


def test_kendall_tau_by_hand_and_undefined_cases():
    # Hand-worked: x = (1, 2, 3), y = (1, 3, 2): pairs (1,2) and (1,3) concordant, (2,3) discordant -> (2-1)/3.
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert kendall_tau([0, 0, 0], [0, 1, 2]) is None  # one ranking ties everything: undefined (scipy: nan)
    assert kendall_tau([0], [0]) is None
    with pytest.raises(ValueError):
        kendall_tau([0, 1], [0])


def _store(tmp_path) -> RankStore:
    return RankStore.open(tmp_path / "r.sqlite3")


def test_a_pair_ranked_both_ways_is_a_contradiction_with_both_rankings(tmp_path):
    with _store(tmp_path) as store:
        store_ranking(store, ["Paris.", "Lyon.", "Rome."], [[0], [1], [2]])  # ranking 1: Paris > Lyon > Rome
        # Another set of the same prompt: the same texts (other whitespace), Lyon now above Paris.
        store_ranking(store, ["Lyon. ", "Paris.\n", "Nice."], [[0], [1], [2]])
        store_ranking(store, ["Paris.", "Lyon."], [[0], [1]], messages=conversation("another question"))  # other prompt
        data = compute_stats(store)
    [c] = data["contradictions"]
    assert (c["a"], c["b"], c["same_text"]) == ("Lyon.", "Paris.", False)
    assert [r["ranking_id"] for r in c["b_over_a"]] == [1] and [r["ranking_id"] for r in c["a_over_b"]] == [2]
    assert c["in_export"] is True and c["question"] == "Which answer is best?"
    assert c["a_over_b"][0]["date"][:2] == "20" and "T" in c["a_over_b"][0]["date"]
    [r] = data["repeated_prompts"]
    assert (r["first"]["ranking_id"], r["second"]["ranking_id"], r["shared_texts"]) == (1, 2, 2)
    assert r["tau"] == pytest.approx(-1.0) and data["mean_tau"] == pytest.approx(-1.0)
    json.dumps(data)  # --json prints it as is


def test_a_re_ranking_that_changes_its_mind_is_listed_but_not_in_the_export(tmp_path):
    with _store(tmp_path) as store:
        sid = store_ranking(store, ["a", "b", "c"], [[0], [1], [2]])
        store.add_ranking(sid, Ranking(((1,), (0,), (2,)), "ranked"))  # b > a > c now
        store.add_ranking(sid, Ranking(((0, 1, 2),), "skipped"))  # a skip judges nothing
        data = compute_stats(store)
    [c] = data["contradictions"]
    assert (c["a"], c["b"]) == ("a", "b") and c["in_export"] is False  # the export only holds the latest (a skip)
    assert c["a_over_b"][0]["latest"] is False and c["b_over_a"][0]["ranking_id"] == 2
    [r] = data["repeated_prompts"]
    assert r["shared_texts"] == 3 and r["tau"] == pytest.approx(kendall_tau([0, 1, 2], [1, 0, 2]))


def test_equal_texts_in_two_tiers_of_one_ranking_contradict_themselves(tmp_path):
    with _store(tmp_path) as store:
        store_ranking(store, ["Same answer.", "Other.", "Same  answer."], [[0], [1], [2]])
        store_ranking(store, ["x", "y"], [[0, 1]])  # a tie says nothing either way
        data = compute_stats(store)
    [c] = data["contradictions"]
    assert c["same_text"] and c["a"] == c["b"] == "Same answer."
    assert c["a_over_b"] == c["b_over_a"] and c["a_over_b"][0]["ranking_id"] == 1
    assert data["repeated_prompts"] == [] or all(r["tau"] is None for r in data["repeated_prompts"])


def test_stats_without_repeats_report_empty_lists_and_no_tau(tmp_path):
    with _store(tmp_path) as store:
        store_ranking(store, ["a", "b"], [[0], [1]])
        data = compute_stats(store)
    assert data["contradictions"] == [] and data["repeated_prompts"] == [] and data["mean_tau"] is None


def test_conflicts_of_a_draft_name_the_earlier_ranking():
    js = judgements([])
    assert js == []
    from chatcli_rank.consistency import judgement

    q = conversation()
    earlier = [judgement(7, 3, 1_700_000_000.0, q, ["Paris.", "Lyon.", "Rome."], Ranking(((0,), (1,), (2,))))]
    texts = ["Rome.", "Lyon.", "Paris."]
    # Draft: Lyon (1) > Paris (2) contradicts #7's Paris > Lyon; Rome over both too.
    found = conflicts(earlier, q, texts, [[1], [2], [0]])
    assert [(c.above, c.below, c.earlier.ranking_id) for c in found] == [(1, 2, 7)]
    assert found[0].describe().startswith("2 > 3 here, but ranking #7 (")
    assert conflicts(earlier, q, texts, [[2], [1], [0]]) == []  # the same order as before
    assert conflicts(earlier, conversation("other?"), texts, [[1], [2], [0]]) == []  # another prompt
    same = conflicts([], q, ["x", " x", "y"], [[0], [2], [1]])
    assert [(c.above, c.below, c.earlier) for c in same] == [(0, 1, None)]
    assert "say the same" in same[0].describe()


def test_normalise_and_tau_of_repeated_prompts_use_best_tier_of_a_repeated_text():
    assert normalise("  a\n\tb  ") == "a b"
    from chatcli_rank.consistency import judgement

    q = conversation()
    one = judgement(1, 1, 0.0, q, ["a", "b", "c", "a"], Ranking(((0,), (1,), (2,), (3,))))
    two = judgement(2, 2, 0.0, q, ["c", "b", "a"], Ranking(((0,), (1,), (2,))))
    assert one.places == {"a": 0, "b": 1, "c": 2} and one.repeated == ("a",)
    [r] = repeated_prompts([one, two])
    assert r["tau"] == pytest.approx(-1.0) and not math.isnan(r["tau"])
    kinds = sorted((c["a"], c["b"]) for c in contradictions([one, two]))
    assert kinds == [("a", "a"), ("a", "b"), ("a", "c"), ("b", "c")]


def test_rank_stats_json_and_text_show_contradictions_and_tau(tmp_path):
    from chatcli_rank.cli import rank_app

    path = tmp_path / "r.sqlite3"
    with RankStore.open(path) as store:
        store_ranking(store, ["Paris [x].", "Lyon."], [[0], [1]])
        store_ranking(store, ["Lyon.", "Paris [x]."], [[0], [1]])
    runner = CliRunner()
    r = runner.invoke(rank_app, ["stats", "--json", "--store", str(path)])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert len(data["contradictions"]) == 1 and data["mean_tau"] == -1.0
    r = runner.invoke(rank_app, ["stats", "--store", str(path)], env={"COLUMNS": "160"})
    assert r.exit_code == 0, r.output
    assert "contradictions: 1 (1 in the export" in r.output and "Paris [x]." in r.output  # brackets are text
    assert "mean Kendall's τ -1.00" in r.output and "#1 (" in r.output and "#2 (" in r.output
