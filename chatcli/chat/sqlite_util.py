"""Opening the SQLite files chatcli keeps in the user data dir, one way for every store.

Contract:
- :func:`open_db` returns an autocommit connection (``isolation_level=None``, shareable
  across threads; callers guard it with their own lock) in WAL mode (a rollback journal
  where the filesystem has no shared memory), with a busy timeout, foreign keys on, the
  requested ``synchronous`` level and the schema migrated forward by :func:`migrate`. A
  migration is SQL text (statements separated by ``;``) or a function of the connection
  (for steps that depend on what this SQLite can do, or SQL whose statements hold ``;``,
  such as triggers); either runs inside the migration's transaction.
- Every failure (folder not creatable, read-only, locked, damaged, schema from a newer
  chatcli) raises the caller's ``error`` class with one line saying where and what to
  do, followed by the caller's ``tail`` (what happens instead, e.g. "chatting without
  saving").
- ``open_db(..., read_only=True)`` opens an existing file for reading only (nothing is
  created, migrated or written; :func:`writable` says when a caller needs it), so
  listing and showing work on a store that cannot be written.
- :func:`db_error` is that one line for an ``sqlite3.Error`` met later, while reading
  (a file with the current ``user_version`` but other columns, a corrupt page): stores
  raise it instead of letting a traceback through.
- :class:`Transaction` is ``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error).
- :func:`has_fts5` says whether this Python's SQLite has the FTS5 full-text module.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

from chatcli.errors import ChatcliError

# One schema step: SQL text (statements separated by ';') or a function run on the connection.
Migration = str | Callable[[sqlite3.Connection], None]


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
    migrations: Sequence[Migration],
    synchronous: str = "NORMAL",
    timeout: float = 2.0,
    tail: str = "",
    read_only: bool = False,
) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the database at ``path``; ``what`` names it in messages."""
    if read_only:
        return _open_read_only(path, what=what, error=error, migrations=migrations, timeout=timeout, tail=tail)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise error(
            f"cannot create {path.parent} ({e.strerror or e}); set CHATCLI_HOME to a writable folder{tail}"
        ) from None
    if not writable(path):
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
    except sqlite3.Error as e:
        conn.close()
        raise db_error(e, what=what, error=error, tail=tail) from None
    return conn


def writable(path: Path) -> bool:
    """Whether SQLite can write ``path`` (the file, if it exists, and its folder, for the journal)."""
    return os.access(path.parent, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))


def db_error(e: sqlite3.Error, *, what: str, error: type[ChatcliError], tail: str = "") -> ChatcliError:
    """The caller's one-line error for ``e``: locked, read-only, or damaged (corrupt pages, unknown columns)."""
    text = str(e)
    if isinstance(e, sqlite3.OperationalError) and "locked" in text:
        return error(f"cannot use {what} (another program holds it locked; close it and retry){tail}")
    if "readonly" in text or "read-only" in text:
        return error(f"{what} is read-only; fix its permissions or set CHATCLI_HOME{tail}")
    if isinstance(e, sqlite3.OperationalError) and not text.startswith(("no such", "table ")):
        return error(f"cannot use {what} ({text}){tail}")  # e.g. disk I/O, out of memory: not the file's fault
    # "no such column/table" with the current user_version: someone else's file, or a hand-edited one.
    return error(f"{what} is damaged ({text}); move it away to start a new one{tail}")


def _open_read_only(
    path: Path, *, what: str, error: type[ChatcliError], migrations: Sequence[Migration], timeout: float, tail: str
) -> sqlite3.Connection:
    """An existing database opened with ``mode=ro``; ``immutable=1`` where even that needs a write.

    A WAL file opened read-only needs its ``-shm`` file; in a folder that cannot be
    written, where none is left, ``immutable`` reads the file as it is.
    """
    if not path.is_file():
        raise error(f"{what} does not exist and its folder is read-only; set CHATCLI_HOME{tail}")
    uri = path.resolve().as_uri()
    last: sqlite3.Error | None = None
    for flags in ("mode=ro", "immutable=1"):
        conn = None
        try:
            conn = sqlite3.connect(f"{uri}?{flags}", uri=True, timeout=timeout, check_same_thread=False,
                                   isolation_level=None)  # fmt: skip
            conn.execute("PRAGMA busy_timeout = %d" % int(timeout * 1000))
            found = int(conn.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.Error as e:
            if conn is not None:
                conn.close()
            last = e
            continue
        if found != len(migrations):
            conn.close()
            if found > len(migrations):
                raise error(f"{what} has schema version {found}, newer than this chatcli ({len(migrations)}); "
                            f"upgrade chatcli{tail}")
            raise error(f"{what} is read-only and has the older schema version {found}; open it once with write "
                        f"access to upgrade it{tail}")
        return conn
    assert last is not None
    raise db_error(last, what=what, error=error, tail=tail) from None


def migrate(
    conn: sqlite3.Connection, migrations: Sequence[Migration], *, what: str, error: type[ChatcliError], tail: str = ""
) -> int:
    """Bring the schema to ``len(migrations)`` (entry i upgrades version i to i+1); returns the version found."""
    latest = len(migrations)
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > latest:
        raise error(f"{what} has schema version {found}, newer than this chatcli ({latest}); upgrade chatcli{tail}")
    for version in range(found, latest):
        conn.execute("BEGIN IMMEDIATE")
        try:
            step = migrations[version]
            if callable(step):
                step(conn)
            else:  # executescript() would COMMIT the surrounding transaction; run statements one by one.
                for statement in (s.strip() for s in step.split(";")):
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


@cache  # a fact of the SQLite library this process loaded
def has_fts5() -> bool:
    """Whether this Python's SQLite was built with FTS5 (almost every build is; some are not)."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE VIRTUAL TABLE probe USING fts5(x)")
        return True
    except sqlite3.Error:
        return False
    finally:
        conn.close()
