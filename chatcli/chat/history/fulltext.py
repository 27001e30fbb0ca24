"""Full-text search over saved messages: an SQLite FTS5 index, or LIKE where FTS5 is missing.

Contract:

- :func:`add_search_index` is the history's schema migration 2. Where this SQLite has FTS5
  (:func:`~chatcli.chat.sqlite_util.has_fts5`) it creates ``messages_fts``, an
  *external-content* FTS5 table over ``messages.content`` (keyed by the message row's rowid,
  so the text is stored once), three triggers that keep it in step with every insert,
  update and delete of a message, and indexes the rows already there (``'rebuild'``).
  Without FTS5 it creates nothing and :func:`search` uses LIKE; a file indexed elsewhere
  and opened by a SQLite without FTS5 is searched with LIKE too.
- :func:`search` finds the messages that contain every word of the query, each word also as
  the start of a longer one (``pari`` finds ``Paris``): with FTS5 case- and
  accent-insensitively, best match first (bm25); with LIKE case-insensitively for ASCII,
  newest conversation first. Each hit has a one-line snippet and the spans of the matched
  words in it. :attr:`SearchResults.indexed` says which way it searched.
- The query is never passed to FTS5 as syntax: each word becomes a quoted prefix phrase,
  so ``"``, ``*`` or ``AND`` in it cannot fail a search; a query without a word is a
  :class:`~chatcli.errors.UsageError`.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

from chatcli.chat.sqlite_util import has_fts5
from chatcli.errors import UsageError

TABLE = "messages_fts"
# Triggers hold ';' inside BEGIN ... END, so the statements are kept apart here.
INDEX_SCHEMA = (
    f"CREATE VIRTUAL TABLE {TABLE} USING fts5(content, content='messages', tokenize='unicode61 remove_diacritics 2')",
    f"""CREATE TRIGGER {TABLE}_insert AFTER INSERT ON messages BEGIN
        INSERT INTO {TABLE}(rowid, content) VALUES (new.rowid, new.content);
    END""",
    f"""CREATE TRIGGER {TABLE}_delete AFTER DELETE ON messages BEGIN
        INSERT INTO {TABLE}({TABLE}, rowid, content) VALUES ('delete', old.rowid, old.content);
    END""",
    # An answer's content grows batch by batch while it streams: re-index it only when it changed.
    f"""CREATE TRIGGER {TABLE}_update AFTER UPDATE OF content ON messages WHEN old.content IS NOT new.content BEGIN
        INSERT INTO {TABLE}({TABLE}, rowid, content) VALUES ('delete', old.rowid, old.content);
        INSERT INTO {TABLE}(rowid, content) VALUES (new.rowid, new.content);
    END""",
)
_OPEN, _CLOSE = "\x02", "\x03"  # match markers inside a snippet (control characters no message needs)
SNIPPET_TOKENS = 12  # words FTS5 keeps around the best match
_LIKE_CONTEXT = 60  # characters LIKE's snippet keeps before the first match (and twice that after)


@dataclass(frozen=True)
class SearchHit:
    conversation: int
    title: str
    message: int
    role: str
    snippet: str  # one line: whitespace runs are single spaces, '…' where text was cut
    spans: tuple[tuple[int, int], ...]  # [start, end) of each matched word in ``snippet``
    updated: float  # the conversation's last change

    def to_json(self) -> dict:
        return {"conversation": self.conversation, "title": self.title, "message": self.message, "role": self.role,
                "snippet": self.snippet, "spans": [list(s) for s in self.spans], "updated": self.updated}  # fmt: skip


@dataclass(frozen=True)
class SearchResults:
    hits: list[SearchHit]
    total: int  # matching messages in all (hits holds at most the limit)
    indexed: bool  # FTS5 was used; False: LIKE (no FTS5 in this SQLite, or no index in this file)


def add_search_index(conn: sqlite3.Connection) -> None:
    """Schema migration 2: the FTS5 index and its triggers, filled from the messages already saved."""
    if not has_fts5():
        return  # LIKE instead; nothing to keep in sync
    for statement in INDEX_SCHEMA:
        conn.execute(statement)
    conn.execute(f"INSERT INTO {TABLE}({TABLE}) VALUES ('rebuild')")


def is_indexed(conn: sqlite3.Connection) -> bool:
    """Whether this file has the index and this SQLite can read it."""
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (TABLE,)).fetchone()
    return found is not None and has_fts5()


def query_words(text: str) -> list[str]:
    """The words of a query (letters, digits, '_'); a query without one is a UsageError."""
    words = re.findall(r"\w+", text)
    if not words:
        raise UsageError(f"nothing to search for in {text!r}: give at least one word")
    return words


def search(conn: sqlite3.Connection, text: str, limit: int = 20) -> SearchResults:
    """The messages holding every word of ``text`` (at most ``limit``), each with a snippet."""
    words = query_words(text)
    if is_indexed(conn):
        return _fts_search(conn, words, limit)
    return _like_search(conn, words, limit)


def _fts_search(conn: sqlite3.Connection, words: list[str], limit: int) -> SearchResults:
    match = " ".join(f'"{w}" *' for w in words)  # quoted: never FTS5 syntax; '*': a prefix
    rows = conn.execute(
        f"SELECT m.conv_id, c.title, m.id, m.role, snippet({TABLE}, 0, ?, ?, '…', ?), c.updated"
        f" FROM {TABLE} JOIN messages m ON m.rowid = {TABLE}.rowid JOIN conversations c ON c.id = m.conv_id"
        f" WHERE {TABLE} MATCH ? ORDER BY {TABLE}.rank, c.updated DESC LIMIT ?",
        (_OPEN, _CLOSE, SNIPPET_TOKENS, match, int(limit)),
    ).fetchall()
    total = conn.execute(f"SELECT COUNT(*) FROM {TABLE} WHERE {TABLE} MATCH ?", (match,)).fetchone()[0]
    return SearchResults([_hit(row, row[4]) for row in rows], int(total), indexed=True)


def _like_search(conn: sqlite3.Connection, words: list[str], limit: int) -> SearchResults:
    where = " AND ".join(["m.content LIKE ? ESCAPE '\\'"] * len(words))
    args = [f"%{_like_escape(w)}%" for w in words]
    rows = conn.execute(
        "SELECT m.conv_id, c.title, m.id, m.role, m.content, c.updated FROM messages m"
        f" JOIN conversations c ON c.id = m.conv_id WHERE {where}"
        " ORDER BY c.updated DESC, m.conv_id DESC, m.id LIMIT ?",
        (*args, int(limit)),
    ).fetchall()
    total = conn.execute(f"SELECT COUNT(*) FROM messages m WHERE {where}", args).fetchone()[0]
    return SearchResults([_hit(row, _mark(row[4], words)) for row in rows], int(total), indexed=False)


def _like_escape(word: str) -> str:
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _mark(content: str, words: list[str]) -> str:
    """LIKE's snippet: the text around the first match, every match between the markers."""
    pattern = re.compile("|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)), re.IGNORECASE)
    first = pattern.search(content)
    start = 0 if first is None else max(0, first.start() - _LIKE_CONTEXT)
    end = min(len(content), (first.end() if first else 0) + 2 * _LIKE_CONTEXT)
    if start > 0:  # begin and end on a word boundary where one is near
        space = content.find(" ", start, first.start() if first else end)
        start = space + 1 if space != -1 else start
    if end < len(content):
        space = content.rfind(" ", first.end() if first else start, end)
        end = space if space != -1 else end
    window = pattern.sub(lambda m: f"{_OPEN}{m.group(0)}{_CLOSE}", content[start:end])
    return ("…" if start > 0 else "") + window + ("…" if end < len(content) else "")


def _hit(row: tuple, marked: str) -> SearchHit:
    snippet, spans = _spans(marked)
    return SearchHit(int(row[0]), row[1] or "", int(row[2]), row[3], snippet, spans, float(row[5]))


def _spans(marked: str) -> tuple[str, tuple[tuple[int, int], ...]]:
    """Plain one-line text and the matched spans of a snippet with markers."""
    marked = re.sub(r"\s+", " ", marked).strip()  # one line: the markers are not whitespace
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    length = 0
    start = None
    for part in re.split(f"([{_OPEN}{_CLOSE}])", marked):
        if part == _OPEN:
            start = length
        elif part == _CLOSE:
            if start is not None and length > start:
                spans.append((start, length))
            start = None
        else:
            out.append(part)
            length += len(part)
    return "".join(out), tuple(spans)
