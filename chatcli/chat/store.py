"""Conversation history in SQLite (WAL) in the user data dir.

Contract:
- :meth:`Store.open` raises :class:`StoreUnavailable` (one line: where, why, what to
  do) when the data dir is missing and cannot be made, read-only, locked, or holds a
  database from a newer chatcli. Front ends report it and chat in memory.
- The schema carries ``PRAGMA user_version``; :data:`MIGRATIONS`
  (:mod:`chatcli.chat.history.schema`) upgrade older files forward in one
  transaction each, never backward.
- Writes are small transactions (WAL, ``synchronous=NORMAL``): an answer's steps
  are appended in batches while it streams, so ``kill -9`` loses at most the batch
  not yet written. One connection is shared by the UI thread and the generation
  worker, guarded by a lock.
- Reading never lets a traceback through: a file whose columns or pages are damaged
  raises :class:`StoreUnavailable` (one line), and :meth:`Store.load_checked` reads
  each JSON cell on its own (message ``meta``, ``steps.data``, the conversation's
  ``params`` and ``active``; :mod:`chatcli.chat.history.saved_rows`): what can be read
  is shown, what cannot is left out and reported as an :class:`Unreadable`. :meth:`Store.open_for_reading` opens a store
  that cannot be written read-only, so the history can still be listed and shown.

Tables (:mod:`chatcli.chat.history.schema`): ``conversations`` (title, model, system, params, active-branch map),
``messages`` (the tree: parent, role, content, status, meta), ``steps`` (one row
per generated token, the distribution as compact JSON), and since schema 2
``messages_fts``, the full-text index :meth:`Store.search` reads, kept in sync by
triggers (:mod:`chatcli.chat.history.fulltext`; absent where SQLite has no FTS5).
:meth:`Store.save_turn` writes a conversation and new messages in one transaction
(a ``chatcli generate`` run, saved once when it ends).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from chatcli.engine.events import Step
from chatcli.errors import ChatcliError, UsageError
from chatcli.chat.history.fulltext import TABLE as SEARCH_TABLE
from chatcli.chat.history.fulltext import SearchResults, search
from chatcli.chat.history.saved_rows import Unreadable, conversation_from_rows
from chatcli.chat.history.schema import DB_NAME, MIGRATIONS, SCHEMA_VERSION  # noqa: F401  (SCHEMA_VERSION re-exported)
from chatcli.chat.session import Conversation, Node, dumps, step_to_row
from chatcli.chat.sqlite_util import Transaction, data_file, db_error, has_fts5, open_db, writable

_TAIL = " — chatting without saving"  # what every open error adds: the chat goes on in memory


class StoreUnavailable(ChatcliError):
    """History cannot be read or written; the chat goes on in memory."""


@dataclass(frozen=True)
class ConversationSummary:
    id: int
    title: str
    model: str | None
    created: float
    updated: float
    messages: int


def default_db_path(tail: str = _TAIL) -> Path:
    """``history.sqlite3`` in the user data dir (``$CHATCLI_HOME/data`` when set)."""
    return data_file(DB_NAME, StoreUnavailable, tail)


class Store:
    """A handle on the history database. Thread-safe (one connection, one lock)."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._lock = threading.RLock()

    # --- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls, path: Path | str | None = None, *, timeout: float = 2.0, read_only: bool = False, tail: str = _TAIL
    ) -> "Store":
        """The store at ``path``; ``tail`` ends every error line (the chat says it goes on without saving)."""
        path = Path(path) if path is not None else default_db_path(tail)
        what = f"history database {path}"
        conn = open_db(
            path, what=what, error=StoreUnavailable, migrations=MIGRATIONS,
            synchronous="NORMAL", timeout=timeout, tail=tail, read_only=read_only,
        )
        if not read_only and not has_fts5():
            try:
                indexed = _has_table(conn, SEARCH_TABLE)
            except sqlite3.Error as e:
                conn.close()
                raise db_error(e, what=what, error=StoreUnavailable, tail=tail) from None
            if indexed:  # its triggers would fail every write: say so once, here
                conn.close()
                raise StoreUnavailable(f"{what} has a search index this Python's SQLite cannot update (no FTS5); "
                                       f"use a Python whose SQLite has FTS5{tail}")  # fmt: skip
        return cls(conn, path)

    @classmethod
    def open_for_reading(cls, path: Path | str | None = None, *, tail: str = "") -> "Store":
        """The store for listing and showing: read-only when its file or folder cannot be written."""
        path = Path(path) if path is not None else default_db_path(tail)
        return cls.open(path, read_only=path.is_file() and not writable(path), tail=tail)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- writing ---------------------------------------------------------------------------

    def save_conversation(self, conv: Conversation) -> int:
        """Insert or update the conversation header; assigns ``conv.id`` on first save."""
        with self._lock, self._tx():
            self._upsert_conversation(conv)
        assert conv.id is not None
        return conv.id

    def save_turn(self, conv: Conversation, nodes: Sequence[Node]) -> int:
        """The conversation header and ``nodes`` with all their steps, in one transaction
        (a one-shot answer is saved whole or not at all); assigns ``conv.id`` on first save."""
        with self._lock, self._tx():
            self._upsert_conversation(conv)
            for node in nodes:
                self._upsert_node(conv, node)
                self._conn.execute("DELETE FROM steps WHERE conv_id=? AND msg_id=?", (conv.id, node.id))
                self._insert_steps(conv.id, node.id, 0, node.steps)
        assert conv.id is not None
        return conv.id

    def _upsert_conversation(self, conv: Conversation) -> None:
        row = (
            conv.title, conv.created, conv.updated, conv.model, conv.system,
            dumps(conv.params.to_json()), dumps({str(k): v for k, v in conv.active.items()}),
        )
        if conv.id is None:
            cur = self._conn.execute(
                "INSERT INTO conversations(title, created, updated, model, system, params, active)"
                " VALUES (?,?,?,?,?,?,?)",
                row,
            )
            conv.id = int(cur.lastrowid)
        else:
            self._conn.execute(
                "INSERT INTO conversations(id, title, created, updated, model, system, params, active)"
                " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET title=excluded.title,"
                " updated=excluded.updated, model=excluded.model, system=excluded.system,"
                " params=excluded.params, active=excluded.active",
                (conv.id, *row),
            )

    def save_node(self, conv: Conversation, node: Node, *, with_steps: bool = False) -> None:
        """Insert or update one message (and, optionally, replace all its steps)."""
        if conv.id is None:
            self.save_conversation(conv)
        with self._lock, self._tx():
            self._upsert_node(conv, node)
            if with_steps:
                self._conn.execute("DELETE FROM steps WHERE conv_id=? AND msg_id=?", (conv.id, node.id))
                self._insert_steps(conv.id, node.id, 0, node.steps)

    def append_steps(self, conv: Conversation, node: Node, start: int, steps: Sequence[Step]) -> None:
        """Write ``steps`` as positions ``start..`` of ``node`` and its content so far, in one transaction."""
        with self._lock, self._tx():
            self._upsert_node(conv, node)
            self._insert_steps(conv.id, node.id, start, steps)

    def delete(self, conv_id: int) -> bool:
        with self._reading(), self._tx():  # only `history rm` deletes: its errors are one line too
            self._conn.execute("DELETE FROM steps WHERE conv_id=?", (conv_id,))
            self._conn.execute("DELETE FROM messages WHERE conv_id=?", (conv_id,))
            cur = self._conn.execute("DELETE FROM conversations WHERE id=?", (conv_id,))
            return cur.rowcount > 0

    def _upsert_node(self, conv: Conversation, node: Node) -> None:
        self._conn.execute(
            "INSERT INTO messages(conv_id, id, parent, role, content, status, created, meta)"
            " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(conv_id, id) DO UPDATE SET content=excluded.content,"
            " status=excluded.status, meta=excluded.meta",
            (conv.id, node.id, node.parent, node.role, node.content, node.status, node.created, dumps(node.meta)),
        )
        self._conn.execute(
            "UPDATE conversations SET updated=?, title=?, active=? WHERE id=?",
            (time.time(), conv.title, dumps({str(k): v for k, v in conv.active.items()}), conv.id),
        )

    def _insert_steps(self, conv_id: int, msg_id: int, start: int, steps: Sequence[Step]) -> None:
        self._conn.executemany(
            "INSERT OR REPLACE INTO steps(conv_id, msg_id, idx, data) VALUES (?,?,?,?)",
            [(conv_id, msg_id, start + i, dumps(step_to_row(s))) for i, s in enumerate(steps)],
        )

    def _tx(self):
        return Transaction(self._conn)

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Hold the lock; a damaged file (unknown columns, corrupt pages) is one StoreUnavailable line."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as e:
                raise db_error(e, what=f"history database {self.path}", error=StoreUnavailable) from None

    # --- reading ---------------------------------------------------------------------------

    def list(self, limit: int | None = None) -> list[ConversationSummary]:
        sql = (
            "SELECT c.id, c.title, c.model, c.created, c.updated,"
            " (SELECT COUNT(*) FROM messages m WHERE m.conv_id = c.id)"
            " FROM conversations c ORDER BY c.updated DESC, c.id DESC"
        )
        args: tuple = ()
        if limit is not None:
            sql += " LIMIT ?"
            args = (int(limit),)
        with self._reading():
            rows = self._conn.execute(sql, args).fetchall()
        return [ConversationSummary(int(r[0]), r[1], r[2], r[3], r[4], int(r[5])) for r in rows]

    def recent_inputs(self, limit: int = 200) -> list[str]:
        """The person's most recent messages across conversations, oldest first (prompt history)."""
        with self._reading():
            rows = self._conn.execute(
                "SELECT content FROM messages WHERE role='user' ORDER BY created DESC LIMIT ?", (int(limit),)
            ).fetchall()
        out: list[str] = []
        for (text,) in reversed(rows):
            if not out or out[-1] != text:
                out.append(text)
        return out

    def search(self, text: str, limit: int = 20) -> SearchResults:
        """Saved messages holding every word of ``text``, with snippets (FTS5, else LIKE: see its ``indexed``)."""
        with self._reading():
            return search(self._conn, text, limit)

    def latest_id(self) -> int | None:
        items = self.list(limit=1)
        return items[0].id if items else None

    def load(self, conv_id: int) -> Conversation:
        """The whole tree with its steps; :class:`UsageError` if there is no such conversation."""
        return self.load_checked(conv_id)[0]

    def load_checked(self, conv_id: int) -> tuple[Conversation, list[Unreadable]]:
        """:meth:`load`, and the cells that could not be read (left out, so the rest still shows)."""
        with self._reading():
            head = self._conn.execute(
                "SELECT id, title, created, updated, model, system, params, active FROM conversations WHERE id=?",
                (int(conv_id),),
            ).fetchone()
            if head is None:
                raise UsageError(f"no conversation {conv_id} in the history; `chatcli history list` shows the ids")
            msgs = self._conn.execute(
                "SELECT id, parent, role, content, status, created, meta FROM messages WHERE conv_id=? ORDER BY id",
                (int(conv_id),),
            ).fetchall()
            step_rows = self._conn.execute(
                "SELECT msg_id, idx, data FROM steps WHERE conv_id=? ORDER BY msg_id, idx", (int(conv_id),)
            ).fetchall()
        return conversation_from_rows(head, msgs, step_rows)


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def open_store(path: Path | str | None = None) -> tuple[Store | None, str | None]:
    """The store, or ``(None, message)`` to report when history is unavailable."""
    try:
        return Store.open(path), None
    except StoreUnavailable as e:
        return None, e.message
