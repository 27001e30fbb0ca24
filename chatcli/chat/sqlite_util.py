"""Opening the SQLite files chatcli keeps in the user data dir, one way for every store.

Contract:
- :func:`open_db` returns an autocommit connection (``isolation_level=None``, shareable
  across threads; callers guard it with their own lock) in WAL mode (a rollback journal
  where the filesystem has no shared memory), with a busy timeout, foreign keys on, the
  requested ``synchronous`` level and the schema migrated forward by :func:`migrate`.
- Every failure (folder not creatable, read-only, locked, damaged, schema from a newer
  chatcli) raises the caller's ``error`` class with one line saying where and what to
  do, followed by the caller's ``tail`` (what happens instead, e.g. "chatting without
  saving").
- :class:`Transaction` is ``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from chatcli.errors import ChatcliError


def data_file(name: str, error: type[ChatcliError], tail: str = "") -> Path:
    """``data_dir() / name``; a data dir that cannot be created raises ``error``."""
    from chatcli.paths import data_dir

    try:
        return data_dir() / name
    except OSError as e:
        where = e.filename or "the data folder"
        raise error(f"cannot create {where} ({e.strerror or e}); set CHATCLI_HOME to a writable folder{tail}") from None


def open_db(
    path: Path,
    *,
    what: str,
    error: type[ChatcliError],
    migrations: Sequence[str],
    synchronous: str = "NORMAL",
    timeout: float = 2.0,
    tail: str = "",
) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the database at ``path``; ``what`` names it in messages."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise error(
            f"cannot create {path.parent} ({e.strerror or e}); set CHATCLI_HOME to a writable folder{tail}"
        ) from None
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise error(f"{what} is read-only; fix its permissions or set CHATCLI_HOME{tail}")
    try:
        conn = sqlite3.connect(str(path), timeout=timeout, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as e:
        raise error(f"cannot open {what} ({e}){tail}") from None
    try:
        conn.execute("PRAGMA busy_timeout = %d" % int(timeout * 1000))
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":  # e.g. a filesystem without shared memory
            conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn, migrations, what=what, error=error, tail=tail)
    except ChatcliError:
        conn.close()
        raise
    except sqlite3.OperationalError as e:
        conn.close()
        hint = "another program holds it locked; close it and retry" if "locked" in str(e) else str(e)
        raise error(f"cannot use {what} ({hint}){tail}") from None
    except sqlite3.DatabaseError as e:
        conn.close()
        raise error(f"{what} is damaged ({e}); move it away to start a new one{tail}") from None
    return conn


def migrate(
    conn: sqlite3.Connection, migrations: Sequence[str], *, what: str, error: type[ChatcliError], tail: str = ""
) -> int:
    """Bring the schema to ``len(migrations)`` (entry i upgrades version i to i+1); returns the version found."""
    latest = len(migrations)
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > latest:
        raise error(f"{what} has schema version {found}, newer than this chatcli ({latest}); upgrade chatcli{tail}")
    for version in range(found, latest):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # executescript() would COMMIT the surrounding transaction; run statements one by one.
            for statement in (s.strip() for s in migrations[version].split(";")):
                if statement:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return found


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error) on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False
