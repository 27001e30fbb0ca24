"""History in SQLite: round trips, migrations, unavailable data dirs, and kill -9 during an answer."""

from __future__ import annotations

import json
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


# --- damaged files and cells: what can be read is shown, the rest is one line -----------------------


def _history_cli(capsys, *argv):
    """``chatcli history *argv`` in process: (exit code, stdout, stderr); argv may hold numbers (ids)."""
    from tests.cli_support import run  # the CLI loaded only by the tests that use it, as before

    return run(capsys, "history", *map(str, argv))


def test_one_malformed_json_cell_leaves_the_rest_of_the_conversation_readable(capsys):
    # Each of these cells used to make the whole conversation unreadable (history show, chat --resume).
    store = Store.open()
    core = _chat(store)
    conv_id = core.conv.id
    first, second = [n for n in core.conv.path() if n.role == "assistant"]
    with sqlite3.connect(store.path) as con:
        con.execute("UPDATE messages SET meta='{not json' WHERE conv_id=? AND id=?", (conv_id, first.id))
        con.execute("UPDATE steps SET data='[1, 2' WHERE conv_id=? AND msg_id=? AND idx=3", (conv_id, second.id))
        con.execute("UPDATE conversations SET params='oops', active='[1]' WHERE id=?", (conv_id,))
    conv, problems = Store.open(store.path).load_checked(conv_id)
    assert [(p.what, p.message) for p in problems] == [("params", None), ("meta", first.id), ("steps", second.id),
                                                       ("active", None)]  # fmt: skip
    assert [n.content for n in conv.path()] == [n.content for n in core.conv.path()]  # every message is shown
    assert conv.nodes[first.id].meta == {} and len(conv.nodes[first.id].steps) == len(first.steps)
    assert len(conv.nodes[second.id].steps) == 3  # the steps before the unreadable one
    assert conv.params == SamplingParams()
    ChatCore(FakeEngine(), store=Store.open(store.path)).resume(conv_id)  # chat --resume opens it too

    code, out, err = _history_cli(capsys, "show", conv_id, "--tokens")
    assert code == 0 and "tell me more" in out
    assert "(the remaining steps of this answer could not be read)" in out
    assert err.count("chatcli: warning:") == 4 and f"the steps of answer {second.id} could not be read" in err


def test_a_bad_saved_value_keeps_its_default_and_the_other_settings():
    store = Store.open()
    core = _chat(store)
    with sqlite3.connect(store.path) as con:  # a seed saved before seeds were checked
        con.execute("""UPDATE conversations SET params='{"temperature": 0.3, "seed": 100000000000000000000000}'""")
    conv, problems = Store.open(store.path).load_checked(core.conv.id)
    assert conv.params == SamplingParams(temperature=0.3) and not problems


def test_damaged_columns_or_pages_are_one_line_in_history_commands(tmp_path, capsys):
    path = default_db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as con:  # the current user_version, someone else's columns
        con.execute("CREATE TABLE conversations(id INTEGER PRIMARY KEY, other TEXT)")
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    for argv in (["list"], ["show", 1], ["rm", 1]):
        code, out, err = _history_cli(capsys, *argv)
        assert code == 1 and err.count("\n") == 1 and "is damaged (no such" in err and "move it away" in err
    path.unlink()
    store = Store.open()
    _chat(store, messages=[f"message {i} " * 40 for i in range(40)])
    store.close()
    with sqlite3.connect(path) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    data[4096 * 2: 4096 * 4] = b"\x55" * (4096 * 2)  # corrupt pages past the header
    path.write_bytes(bytes(data))
    code, out, err = _history_cli(capsys, "show", 1)
    assert code == 1 and err.count("\n") == 1 and "damaged" in err and "Traceback" not in err


def test_a_read_only_store_can_be_listed_and_shown_but_not_changed(capsys, monkeypatch):
    store = Store.open()
    conv_id = _chat(store).conv.id
    store.close()
    with monkeypatch.context() as m:
        m.setattr(sqlite_util.os, "access", lambda path, mode: False)  # what a read-only file reports
        code, out, err = _history_cli(capsys, "list", "--json")
        assert code == 0 and [json.loads(line)["id"] for line in out.splitlines()] == [conv_id]
        code, out, err = _history_cli(capsys, "show", conv_id)
        assert code == 0 and "tell me more" in out
        code, out, err = _history_cli(capsys, "rm", conv_id)
        assert code == 1 and err.strip() == (f"chatcli: error: history database {default_db_path()} is read-only; "
                                             "fix its permissions or set CHATCLI_HOME")
    assert [s.id for s in Store.open().list()] == [conv_id]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_file_and_folder_are_read_for_real(capsys):
    store = Store.open()
    conv_id = _chat(store).conv.id
    store.close()
    path = default_db_path()
    path.chmod(0o444)
    path.parent.chmod(0o555)
    try:
        code, out, err = _history_cli(capsys, "show", conv_id)
        assert code == 0 and "tell me more" in out, err
        code, out, err = _history_cli(capsys, "rm", conv_id)
        assert code == 1 and "read-only" in err and err.count("\n") == 1
    finally:
        path.parent.chmod(0o755)
        path.chmod(0o644)
