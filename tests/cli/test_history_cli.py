"""`chatcli history search` and `history path` from the command line."""

from __future__ import annotations

import json

import pytest

from chatcli.chat import store as store_mod
from chatcli.chat.core import ChatCore
from chatcli.chat.history import fulltext
from chatcli.chat.history.search_view import HIGHLIGHT, search_view
from chatcli.chat.store import Store, default_db_path
from chatcli.engine.params import SamplingParams
from tests.cli_support import run as cli_run
from tests.fake_engine import FakeEngine


def run(capsys, *argv):
    """``chatcli history *argv`` in process: (exit code, stdout, stderr)."""
    return cli_run(capsys, "history", *argv)


@pytest.fixture
def saved():
    store = Store.open()
    ids = []
    for messages in (["Tell me about the lighthouse keeper", "and his dog?"], ["A lighthouse in fog"]):
        core = ChatCore(FakeEngine(length=10), store=store, params=SamplingParams(seed=2))
        for text in messages:
            list(core.run(core.send(text)))
        ids.append(core.conv.id)
    store.close()
    return ids


@pytest.mark.skipif(not fulltext.has_fts5(), reason="the order is bm25's (FTS5)")
def test_search_prints_hits_under_their_conversations(capsys, saved):
    code, out, err = run(capsys, "search", "lighthouse")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 4  # two conversations, one hit each, best match (the shorter message) first
    assert lines[0].startswith("#2 ") and lines[0].endswith("A lighthouse in fog")
    assert lines[1].split() == ["user", "A", "lighthouse", "in", "fog"]
    assert lines[2].startswith("#1 ") and lines[2].endswith("Tell me about the lighthouse keeper")
    assert lines[3].split() == ["user", "Tell", "me", "about", "the", "lighthouse", "keeper"]


def test_the_matched_words_are_highlighted():
    hit = fulltext.SearchHit(3, "t", 1, "assistant", "a [b] lighthouse", ((6, 16),), 0.0)
    (header, line) = search_view([hit]).renderables
    assert line.plain == "  model  a [b] lighthouse"  # message text is not markup
    (span,) = [s for s in line.spans if s.style == HIGHLIGHT]
    assert line.plain[span.start:span.end] == "lighthouse"


def test_search_json_limit_and_no_match(capsys, saved):
    code, out, err = run(capsys, "search", "lighthouse", "--json", "--limit", "1")
    (hit,) = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and set(hit) == {"conversation", "title", "message", "role", "snippet", "spans", "updated"}
    assert hit["snippet"][hit["spans"][0][0]:hit["spans"][0][1]].lower() == "lighthouse"
    assert err == "chatcli: 1 of 2 matching messages shown (--limit for more)\n"
    code, out, err = run(capsys, "search", "zebra crossing")
    assert code == 0 and out == "" and err == "chatcli: no saved message has 'zebra' and 'crossing'\n"
    code, _, err = run(capsys, "search", "x", "--limit", "0")
    assert code == 2 and err.count("\n") == 1


def test_search_without_fts5_says_so_in_one_line(capsys, monkeypatch):
    for module in (fulltext, store_mod):
        monkeypatch.setattr(module, "has_fts5", lambda: False)
    store = Store.open()
    core = ChatCore(FakeEngine(length=5), store=store, params=SamplingParams(seed=2))
    list(core.run(core.send("the lighthouse")))
    code, out, err = run(capsys, "search", "lighthouse")
    assert code == 0 and "lighthouse" in out
    assert err == "chatcli: note: no full-text index here (this SQLite lacks FTS5); searched with LIKE\n"


def test_path_prints_the_database_path_without_creating_it(capsys):
    code, out, err = run(capsys, "path")
    assert code == 0 and out == f"{default_db_path()}\n" and "not created yet" in err
    assert not default_db_path().exists()
    Store.open().close()
    code, out, err = run(capsys, "path")
    assert code == 0 and out == f"{default_db_path()}\n" and err == ""
