"""The history database's schema: :data:`MIGRATIONS`, one per version, and :data:`SCHEMA_VERSION`.

Each entry upgrades the schema from version i to i+1 (index i); :func:`chatcli.chat.sqlite_util.open_db`
runs the ones a file lacks, one transaction each, and records ``PRAGMA user_version``. Entries are
appended, never edited: a file written by any earlier chatcli upgrades forward, and one from a newer
chatcli is refused. :class:`chatcli.chat.store.Store` opens the database with these.

Tables: ``conversations`` (title, model, system, params, active-branch map), ``messages`` (the
tree: parent, role, content, status, meta), ``steps`` (one row per generated token, the
distribution as compact JSON), and since schema 2 ``messages_fts``, the full-text index
(:mod:`chatcli.chat.history.fulltext`; absent where SQLite has no FTS5).
"""

from __future__ import annotations

from chatcli.chat.history.fulltext import add_search_index
from chatcli.chat.sqlite_util import Migration

DB_NAME = "history.sqlite3"

# Each entry upgrades the schema from version i to i+1 (index i). Append, never edit.
MIGRATIONS: list[Migration] = [
    """
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        title TEXT NOT NULL DEFAULT '',
        created REAL NOT NULL,
        updated REAL NOT NULL,
        model TEXT,
        system TEXT,
        params TEXT NOT NULL DEFAULT '{}',
        active TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE messages (
        conv_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        id INTEGER NOT NULL,
        parent INTEGER,
        role TEXT NOT NULL,
        content TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT 'stop',
        created REAL NOT NULL,
        meta TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (conv_id, id)
    );
    CREATE TABLE steps (
        conv_id INTEGER NOT NULL,
        msg_id INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (conv_id, msg_id, idx),
        FOREIGN KEY (conv_id, msg_id) REFERENCES messages(conv_id, id) ON DELETE CASCADE
    );
    CREATE INDEX conversations_updated ON conversations(updated);
    """,
    add_search_index,  # 2: the full-text index of messages (where SQLite has FTS5)
]
SCHEMA_VERSION = len(MIGRATIONS)
