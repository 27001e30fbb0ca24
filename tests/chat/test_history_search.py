"""History search: the FTS5 index (migration 2 of an existing file, triggers in step with every write), snippets, LIKE."""

from __future__ import annotations

import sqlite3

import pytest

from chatcli.chat import store as store_mod
from chatcli.chat.core import ChatCore
from chatcli.chat.history import fulltext
from chatcli.chat.sqlite_util import has_fts5, open_db
from chatcli.chat.store import MIGRATIONS, SCHEMA_VERSION, Store, StoreUnavailable
from chatcli.engine.params import SamplingParams
from chatcli.errors import UsageError
from tests.fake_engine import FakeEngine

needs_fts5 = pytest.mark.skipif(not has_fts5(), reason="this Python's SQLite has no FTS5")


def _chat(store: Store, *messages: str) -> ChatCore:
    core = ChatCore(FakeEngine(length=40), store=store, params=SamplingParams(seed=1))
    for text in messages:
        list(core.run(core.send(text)))
    return core


def _in_step(path) -> None:
    """FTS5's own check that the external-content index matches the messages table row for row."""
    con = sqlite3.connect(path)
    con.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 1)")
    con.close()


def _no_fts5(monkeypatch) -> None:
    for module in (fulltext, store_mod):
        monkeypatch.setattr(module, "has_fts5", lambda: False)


@needs_fts5
def test_a_file_of_schema_1_is_indexed_on_open_and_its_old_messages_are_found(tmp_path):
    path = tmp_path / "h.db"
    # The file as chatcli wrote it before the index existed: schema 1, written by the store's own code.
    old = Store(open_db(path, what="old", error=StoreUnavailable, migrations=MIGRATIONS[:1]), path)
    _chat(old, "Tell me about the lighthouse keeper", "and his cat?")
    old.close()
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == 1
    assert con.execute("SELECT name FROM sqlite_master WHERE name='messages_fts'").fetchone() is None
    con.close()

    store = Store.open(path)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    found = store.search("lighthouse")
    assert found.indexed and found.total == 1
    (hit,) = found.hits
    assert (hit.conversation, hit.message, hit.role, hit.title) == (1, 1, "user", "Tell me about the lighthouse keeper")
    assert [hit.snippet[a:b] for a, b in hit.spans] == ["lighthouse"]
    _in_step(path)
    _chat(store, "a new lighthouse question")  # the triggers work on the migrated file
    assert store.search("lighthouse").total == 2
    _in_step(path)


@needs_fts5
def test_the_index_follows_streaming_answers_branches_and_removal(tmp_path):
    store = Store.open(tmp_path / "h.db")
    core = _chat(store, "Paris facts", "more please")
    answer = core.conv.path()[1]
    list(core.run(core.branch(answer.id, 3, answer.steps[3].top[-1].id)))
    list(core.run(core.retry()))
    _in_step(store.path)  # every batch of an answer updated its row: the index followed each change
    words = answer.content.split()
    assert store.search(words[-1]).total >= 1  # an answer's last words, written by its last batch
    other = _chat(store, "Rome facts")
    assert {h.conversation for h in store.search("facts").hits} == {core.conv.id, other.conv.id}
    assert store.delete(core.conv.id)
    _in_step(store.path)
    assert [h.conversation for h in store.search("facts").hits] == [other.conv.id]
    assert store.search("Paris facts").total == 0


@needs_fts5
def test_every_word_must_match_prefixes_count_and_case_and_accents_do_not(tmp_path):
    store = Store.open(tmp_path / "h.db")
    _chat(store, "Le café de Lyon est fermé", "Berlin is far")
    assert store.search("CAFE lyon").total == 1
    assert store.search("lyo").total == 1  # the start of a word
    assert store.search("lyon berlin").total == 0  # not in the same message
    hit = store.search("cafe").hits[0]
    assert hit.snippet == "Le café de Lyon est fermé" and [hit.snippet[a:b] for a, b in hit.spans] == ["café"]


@needs_fts5
@pytest.mark.parametrize("query", ['"unbalanced', "AND OR NOT", "NEAR(a b)", "col:text", "x*", "a^b - c"])
def test_query_text_is_never_fts5_syntax(tmp_path, query):
    store = Store.open(tmp_path / "h.db")
    _chat(store, "nothing here matches")
    assert store.search(query).hits == []  # no error, no match


def test_a_query_without_a_word_is_one_usage_line(tmp_path):
    store = Store.open(tmp_path / "h.db")
    with pytest.raises(UsageError, match="give at least one word"):
        store.search(" ?!* ")


@needs_fts5
def test_long_messages_give_a_short_one_line_snippet_with_the_limit_and_total(tmp_path):
    store = Store.open(tmp_path / "h.db")
    long = ("filler words go here\n" * 30) + "the needle is here " + ("and more filler\n" * 30)
    _chat(store, long, long, long)
    found = store.search("needle", limit=2)
    assert found.total == 3 and len(found.hits) == 2
    hit = found.hits[0]
    assert "\n" not in hit.snippet and len(hit.snippet.split()) <= fulltext.SNIPPET_TOKENS + 2
    assert hit.snippet.startswith("…") and hit.snippet.endswith("…")
    assert [hit.snippet[a:b] for a, b in hit.spans] == ["needle"]


def test_without_fts5_nothing_is_indexed_and_like_finds_the_same_messages(tmp_path, monkeypatch):
    _no_fts5(monkeypatch)
    store = Store.open(tmp_path / "h.db")
    assert sqlite3.connect(store.path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert sqlite3.connect(store.path).execute("SELECT name FROM sqlite_master WHERE name='messages_fts'").fetchone() is None
    long = ("filler words go here\n" * 30) + "the Needle_x is 100% here " + ("and more filler\n" * 30)
    core = _chat(store, long, "second NEEDLE_X message", "other")
    found = store.search("needle_x")
    assert not found.indexed and found.total == 2
    assert [h.message for h in found.hits] == [1, 3]  # newest conversation first, then message order
    hit = found.hits[0]
    assert "\n" not in hit.snippet and hit.snippet.startswith("…") and hit.snippet.endswith("…")
    assert [hit.snippet[a:b] for a, b in hit.spans] == ["Needle_x"]
    assert store.search("100%").total == 1 and store.search("100").total == 1  # '%' and '_' are not wildcards
    assert store.search("needle_ other").total == 0 and core.conv.id == 1


@needs_fts5
def test_an_indexed_file_under_a_sqlite_without_fts5_is_refused_for_writing_in_one_line(tmp_path, monkeypatch):
    path = tmp_path / "h.db"
    _chat(Store.open(path), "hello")
    _no_fts5(monkeypatch)
    with pytest.raises(StoreUnavailable, match="no FTS5") as err:
        Store.open(path)
    assert "\n" not in str(err.value.message)
    reader = Store.open(path, read_only=True)  # listing and searching still work (LIKE)
    assert [s.title for s in reader.list()] == ["hello"] and not reader.search("hello").indexed
