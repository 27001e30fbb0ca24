"""The shared SQLite opener: the caller's error class and tail, its synchronous level, forward-only migrations."""

from __future__ import annotations

import sqlite3

import pytest

from chatcli.errors import ChatcliError
from chatcli.chat.sqlite_util import Transaction, open_db


class _Err(ChatcliError):
    pass


def test_opens_in_wal_with_the_requested_sync_level_and_migrates(tmp_path):
    conn = open_db(tmp_path / "a" / "x.db", what="x", error=_Err, migrations=["CREATE TABLE t(v)"], synchronous="FULL")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    with pytest.raises(RuntimeError):
        with Transaction(conn) as c:
            c.execute("INSERT INTO t VALUES (1)")
            raise RuntimeError("rolled back")
    with Transaction(conn) as c:
        c.execute("INSERT INTO t VALUES (2)")
    assert conn.execute("SELECT v FROM t").fetchall() == [(2,)]


def test_errors_use_the_callers_class_and_tail(tmp_path):
    path = tmp_path / "x.db"
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version = 3")
    con.close()
    with pytest.raises(_Err, match=r"^x has schema version 3, newer .*; upgrade chatcli \(still going\)$"):
        open_db(path, what="x", error=_Err, migrations=["CREATE TABLE t(v)"], tail=" (still going)")
    damaged = tmp_path / "d.db"
    damaged.write_bytes(b"not a database" * 100)
    with pytest.raises(_Err, match="damaged.*move it away"):
        open_db(damaged, what="d", error=_Err, migrations=[])
