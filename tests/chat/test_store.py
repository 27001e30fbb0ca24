"""History in SQLite: round trips, migrations, unavailable data dirs, and kill -9 during an answer."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from chatcli.chat import sqlite_util
from chatcli.chat import store as store_mod
from chatcli.chat.core import ChatCore
from chatcli.engine.params import SamplingParams
from chatcli.errors import UsageError
from chatcli.chat.store import SCHEMA_VERSION, Store, StoreUnavailable, default_db_path, open_store
from tests.fake_engine import FakeEngine

ROOT = Path(__file__).resolve().parents[2]


def _chat(store: Store, **kw) -> ChatCore:
    core = ChatCore(FakeEngine(length=12), store=store, params=SamplingParams(temperature=0.8, seed=3), system="Be brief.")
    for text in kw.get("messages", ["hello", "tell me more"]):
        list(core.run(core.send(text)))
    return core


def test_default_path_is_under_chatcli_home(_chatcli_home):
    assert default_db_path() == Path(_chatcli_home) / "data" / "history.sqlite3"
    store = Store.open()
    assert store.path.exists()
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_round_trip_keeps_tree_steps_params_and_active_branch(tmp_path):
    store = Store.open(tmp_path / "h.db")
    core = _chat(store)
    first_answer = core.conv.path()[1]
    list(core.run(core.branch(first_answer.id, 2, first_answer.steps[2].top[-1].id)))
    conv = core.conv
    loaded = Store.open(tmp_path / "h.db").load(conv.id)
    assert loaded.title == "hello" and loaded.system == "Be brief." and loaded.model == "fake-tiny"
    assert loaded.params == conv.params
    assert [(n.id, n.parent, n.role, n.content, n.status) for n in loaded.path()] == [
        (n.id, n.parent, n.role, n.content, n.status) for n in conv.path()
    ]
    assert len(loaded.nodes) == len(conv.nodes) == 5
    for node in conv.nodes.values():
        assert loaded.nodes[node.id].steps == node.steps
        assert loaded.nodes[node.id].meta.get("forced_at") == node.meta.get("forced_at")


def test_list_latest_and_delete(tmp_path):
    store = Store.open(tmp_path / "h.db")
    a = _chat(store, messages=["one"]).conv.id
    b = _chat(store, messages=["two", "three"]).conv.id
    items = store.list()
    assert [s.id for s in items] == [b, a]
    assert items[0].messages == 4 and items[0].title == "two"
    assert store.latest_id() == b
    assert store.delete(a) and not store.delete(a)
    assert [s.id for s in store.list()] == [b]
    with pytest.raises(UsageError, match="no conversation"):
        store.load(a)
    assert sqlite3.connect(store.path).execute("SELECT COUNT(*) FROM steps WHERE conv_id=?", (a,)).fetchone()[0] == 0


def test_migrates_forward_from_older_versions(tmp_path, monkeypatch):
    path = tmp_path / "h.db"
    Store.open(path).close()  # version 1
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    extra = "ALTER TABLE conversations ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0; CREATE INDEX c_pinned ON conversations(pinned)"
    monkeypatch.setattr(store_mod, "MIGRATIONS", [*store_mod.MIGRATIONS, extra])
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    store = Store.open(path)
    cols = [r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(conversations)")]
    assert "pinned" in cols
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    _chat(store, messages=["still works"])


def test_failed_migration_rolls_back(tmp_path, monkeypatch):
    path = tmp_path / "h.db"
    Store.open(path).close()
    monkeypatch.setattr(store_mod, "MIGRATIONS", [*store_mod.MIGRATIONS, "CREATE TABLE t(x); SELECT * FROM missing_table"])
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(StoreUnavailable):
        Store.open(path)
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert con.execute("SELECT name FROM sqlite_master WHERE name='t'").fetchone() is None


def test_newer_schema_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "h.db"
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    con.close()
    store, message = open_store(path)
    assert store is None and "newer than this chatcli" in message and "\n" not in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_data_dir_is_reported_and_chat_works_in_memory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        store, message = open_store(ro / "data" / "h.db")
        assert store is None and "cannot create" in message
        store, message = open_store(ro / "h.db")
        assert store is None and "read-only" in message
    finally:
        ro.chmod(0o700)
    core = ChatCore(FakeEngine(length=5), store=None)
    done = list(core.run(core.send("hi")))[-1]
    assert done.finish_reason == "stop" and core.conv.leaf.content


def test_unusable_data_dir_is_reported_even_as_root(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data dir should be")
    store, message = open_store(blocker / "data" / "h.db")
    assert store is None and "cannot create" in message and "CHATCLI_HOME" in message
    monkeypatch.setattr(sqlite_util.os, "access", lambda path, mode: False)  # what a read-only dir reports
    store, message = open_store(tmp_path / "h.db")
    assert store is None and "read-only" in message


def test_damaged_file_is_reported(tmp_path):
    path = tmp_path / "h.db"
    path.write_bytes(b"this is not a database" * 100)
    store, message = open_store(path)
    assert store is None and "damaged" in message


def test_locked_database_is_reported_at_open(tmp_path):
    path = tmp_path / "h.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # a brand-new file that another process holds locked
    try:
        with pytest.raises(StoreUnavailable, match="locked"):
            Store.open(path, timeout=0.2)
    finally:
        holder.execute("ROLLBACK")


def test_write_failure_mid_chat_is_reported_once_and_chat_continues(tmp_path):
    path = tmp_path / "h.db"
    store = Store.open(path, timeout=0.1)
    notices: list[tuple[str, str]] = []
    core = ChatCore(FakeEngine(length=8), store=store, on_notice=lambda m, k: notices.append((m, k)))
    list(core.run(core.send("first")))
    holder = sqlite3.connect(path, isolation_level=None, timeout=0.1)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        events = list(core.run(core.send("second")))
    finally:
        holder.execute("ROLLBACK")
    assert events[-1].finish_reason == "stop"
    assert len(notices) == 1 and notices[0][1] == "warning" and "continues without saving" in notices[0][0]
    assert core.store is None
    assert core.conv.leaf.content  # the answer is complete in memory


def test_concurrent_writes_from_two_threads(tmp_path):
    store = Store.open(tmp_path / "h.db")
    errors = []

    def work(tag):
        try:
            _chat(store, messages=[f"{tag}-{i}" for i in range(3)])
        except Exception as e:  # pragma: no cover - the assertion below shows it
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(store.list()) == 2


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from chatcli.chat.core import ChatCore
    from chatcli.engine.events import Step
    from chatcli.engine.params import SamplingParams
    from chatcli.chat.store import Store
    from tests.fake_engine import FakeEngine

    core = ChatCore(FakeEngine(length=100000, delay=0.004), store=Store.open({db!r}),
                    params=SamplingParams(max_tokens=100000, seed=1))
    n = 0
    for ev in core.run(core.send("count forever")):
        if isinstance(ev, Step):
            n += 1
            print(n, flush=True)
    """
)


def test_kill_9_during_an_answer_loses_at_most_the_unsaved_tail(tmp_path):
    db = tmp_path / "h.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT.format(root=str(ROOT), db=str(db))],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    seen = 0
    try:
        for line in proc.stdout:
            seen = int(line)
            if seen >= 150:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert seen >= 150
    store = Store.open(db)
    conv = store.load(store.latest_id())
    user, answer = conv.path()
    assert user.content == "count forever"
    assert answer.status == "cancelled"  # it was streaming when killed
    # the child printed `seen` steps before being killed; it cannot have saved fewer than
    # seen minus one batch (16 steps, or 0.25 s of steps at ~4 ms each)
    assert seen - ChatCore.save_every_steps - 1 <= len(answer.steps)
    assert answer.content == answer.step_text
    assert [s.index for s in answer.steps] == list(range(len(answer.steps)))
