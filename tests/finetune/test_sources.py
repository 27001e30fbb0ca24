"""``--from-history`` and ``--from-rankings``: training data straight from chatcli's stores."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from chatcli.errors import UsageError
from chatcli.chat.session import Conversation
from chatcli.chat.store import Store
from chatcli_finetune import command, sources
from chatcli_finetune.cli import finetune_app
from chatcli_rank.export import records
from chatcli_rank.store import RankStore
from tests.rank_support import conversation, store_ranking


def _save_history() -> dict[str, int]:
    """Three conversations: a branched one, one with a stopped answer, one never answered."""
    store = Store.open()
    a = Conversation(system="Be brief.")
    u1 = a.add("user", "Where is the fox?")
    old = a.add("assistant", "In the old den.", parent=u1.id)
    a.add("user", "And then?", parent=old.id)  # a branch that is not active any more
    a.add("assistant", "Near the river bank.", parent=u1.id)  # the sibling now on the path
    u2 = a.add("user", "Why?", parent=a.leaf.id)
    a.add("assistant", "It is thirsty.", parent=u2.id)
    a.add("user", "Thanks!", parent=a.leaf.id)  # trailing question without an answer
    b = Conversation()
    ub = b.add("user", "Count to three.")
    ab = b.add("assistant", "One, two, three.", parent=ub.id)
    ub2 = b.add("user", "Now to ten.", parent=ab.id)
    b.add("assistant", "One, two, th", parent=ub2.id, status="cancelled")
    b.add("user", "Go on.", parent=b.leaf.id)
    c = Conversation()
    c.add("user", "Hello?")
    ids = {}
    for key, conv in (("a", a), ("b", b), ("c", c)):
        ids[key] = store.save_conversation(conv)
        for node in conv.nodes.values():
            store.save_node(conv, node)
    store.close()
    return ids


def test_history_records_take_the_active_branch_up_to_the_first_unfinished_answer():
    ids = _save_history()
    warnings: list[str] = []
    rows = sources.history_records(None, warn=warnings.append)
    assert rows == [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is the fox?"},
                      {"role": "assistant", "content": "Near the river bank."}, {"role": "user", "content": "Why?"},
                      {"role": "assistant", "content": "It is thirsty."}]},
        {"messages": [{"role": "user", "content": "Count to three."}, {"role": "assistant", "content": "One, two, three."}]},
    ]  # fmt: skip
    assert len(warnings) == 1 and f"#{ids['c']}" in warnings[0]
    assert sources.history_records([ids["b"]]) == rows[1:]
    with pytest.raises(UsageError, match="no saved conversation #99"):
        sources.history_records([99])
    with pytest.raises(UsageError, match="no saved conversation has a finished answer"):
        sources.history_records([ids["c"]])
    assert sources.parse_ids("all") is None and sources.parse_ids("3, 5,3") == [3, 5]
    with pytest.raises(UsageError, match="conversation ids"):
        sources.parse_ids("fox")


def test_ranking_records_are_the_rank_exporters_and_the_file_is_named_by_content(tmp_path):
    with RankStore.open() as store:
        store_ranking(store, ["best", "middle", "worst"], [[0], [1], [2]])
        store_ranking(store, ["a", "b", "c"], [[2], [0, 1]], messages=conversation("Other?"))
        store_ranking(store, ["x", "y"], [[0, 1]])  # one big tie: no pair
        items = store.items()
    dpo = sources.ranking_records("dpo")
    assert dpo == list(records(items, "dpo", "all")) and len(dpo) == 3 + 2
    assert dpo[0]["chosen"] == [{"role": "assistant", "content": "best"}]
    sft = sources.ranking_records("sft")
    assert [r["messages"][-1]["content"] for r in sft] == ["best", "c", "x", "y"]
    p1 = sources.build_data("reward", from_rankings=True)
    p2 = sources.build_data("reward", from_rankings=True)
    assert p1 == p2 and [json.loads(x) for x in p1.read_text().splitlines()] == sources.ranking_records("reward")
    with RankStore.open() as store:
        store_ranking(store, ["new", "old"], [[0], [1]], messages=conversation("Third?"))
    assert sources.build_data("reward", from_rankings=True) != p1  # new data, new file: --resume notices
    with pytest.raises(UsageError, match="needs preference pairs"):
        sources.build_data("dpo", from_history="all")
    with pytest.raises(UsageError, match="one of them"):
        sources.build_data("sft")


def test_a_store_cell_with_half_a_surrogate_pair_is_refused_not_written():
    # A prompt cell written with a broken "\ud83d" escape used to end in a UnicodeEncodeError
    # traceback while the data file was written.
    import sqlite3

    with RankStore.open() as store:
        store_ranking(store, ["best", "worst"], [[0], [1]])
        path = store.path
    with sqlite3.connect(path) as conn:
        conn.execute("""UPDATE prompts SET messages='[{"role":"user","content":"\\ud83d"}]'""")
    with pytest.raises(UsageError, match=r"record 1 from the ranking store holds \\ud83d, half of a UTF-16"):
        sources.build_data("sft", from_rankings=True)
    assert not list(path.parent.glob("finetune/*.jsonl"))


def test_empty_ranking_store_is_a_clear_error():
    with pytest.raises(UsageError, match=r"no ranked pairs .* in the ranking store \(0 ranking"):
        sources.ranking_records("dpo")


def test_cli_sft_from_history_trains_on_saved_conversations(tmp_path, tiny_model_dir):
    ids = _save_history()
    out = tmp_path / "run"
    res = CliRunner().invoke(finetune_app, ["sft", "--from-history", f"{ids['b']}", "--out", str(out), "--model", str(tiny_model_dir),
                                            "--max-steps", "2", "--rank", "2", "--val-split", "0", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    args = json.loads((out / "training_args.json").read_text())
    data = [json.loads(x) for x in open(args["data"], encoding="utf-8")]
    assert data == sources.history_records([ids["b"]])
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"
    assert (out / "adapter_model.safetensors").is_file()


def test_cli_reward_from_rankings_and_the_missing_data_error(tmp_path, tiny_model_dir):
    with RankStore.open() as store:
        store_ranking(store, ["The fox is near the river.", "no", "The quick brown dog."], [[0], [1], [2]])
    out = tmp_path / "rm"
    res = CliRunner().invoke(finetune_app, ["reward", "--from-rankings", "--out", str(out), "--model", str(tiny_model_dir),
                                            "--max-steps", "2", "--rank", "2", "--val-split", "0", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    args = json.loads((out / "training_args.json").read_text())
    assert len(open(args["data"]).read().splitlines()) == 3  # all pairs of a three-tier ranking
    assert json.loads((out / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"
    res = CliRunner().invoke(finetune_app, ["dpo", "--out", str(tmp_path / "x")])
    assert isinstance(res.exception, UsageError) and "give a DATA file" in res.exception.message


class _Ctx:
    def __init__(self):
        from types import SimpleNamespace

        self.core = SimpleNamespace(engine=None, conv=None)
        self.said: list[tuple[str, str]] = []

    def say(self, message, kind="info"):
        self.said.append((str(message), kind))


def test_chat_finetune_from_history_and_rankings_build_the_data(monkeypatch, tmp_path):
    ids = _save_history()
    started: list = []

    class FakeRun:  # stands in for the background process: what would it be given?
        def __init__(self, kind, data, out, extra, model=None, on_end=None, on_event=None):
            started.append((kind, data, extra))
            self.running = False

        def start(self):
            return self

    monkeypatch.setattr(command, "_RUN", {"current": None})
    monkeypatch.setattr(command, "BackgroundRun", FakeRun)
    ctx = _Ctx()
    command.finetune_command(ctx, f"sft --from-history {ids['a']} --max-steps 3")
    kind, data, extra = started[-1]
    assert kind == "sft" and extra == ["--max-steps", "3"]
    assert [json.loads(x) for x in data.read_text().splitlines()] == sources.history_records([ids["a"]])
    with RankStore.open() as store:
        store_ranking(store, ["best", "worst"], [[0], [1]])
    command.finetune_command(ctx, "dpo --max-steps 1")  # dpo: the rankings by default
    assert [json.loads(x)["chosen"][0]["content"] for x in started[-1][1].read_text().splitlines()] == ["best"]
    command.finetune_command(ctx, "sft --from-rankings")
    assert [json.loads(x)["messages"][-1]["content"] for x in started[-1][1].read_text().splitlines()] == ["best"]
    with pytest.raises(UsageError, match="not both"):
        command.finetune_command(ctx, f"sft {data} --from-rankings")
