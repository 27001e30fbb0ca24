"""The ranking store: SQLite in the user data dir (``rankings.sqlite3``), durable at every submit.

Contract:
- WAL with ``synchronous=FULL``: a ranking is on disk (the WAL fsynced) when
  :meth:`RankStore.add_ranking` returns, so a ``kill -9`` (or a power cut) at any
  moment loses no submitted ranking, and SQLite's recovery makes the file open
  afterwards. Every write is one ``BEGIN IMMEDIATE`` transaction.
- The schema carries ``PRAGMA user_version`` and migrates forward only (version 2
  adds the nullable reward columns, version 3 the mark of the conversation's own
  reply among the candidates; stores written before them open and migrate).
- Opening fails with :class:`RankStoreError`, one line saying where and what to do;
  so does any later SQLite error (a file with the current ``user_version`` but other
  columns, a corrupt page) and a stored JSON cell that does not parse: no traceback.

Tables: ``prompts`` (the conversation up to the last user turn, deduplicated by
hash), ``candidate_sets`` (one generation of N answers: model identity, where it
came from, the reward model that scored it if any, and for queue items a ``key`` that makes annotation resumable),
``candidates`` (text, seed, sampling parameters, adapters and scales, finish
reason, mean probabilities, reward score) and ``rankings`` (tiers best first, status, note,
timestamps; the latest ranking of a set is the one that counts).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from chatcli.errors import ChatcliError
from chatcli.chat.sqlite_util import Transaction, data_file, db_error, open_db
from chatcli_rank.candidates import Candidate
from chatcli_rank.ranking import Ranking

DB_NAME = "rankings.sqlite3"

MIGRATIONS: list[str] = [
    """
    CREATE TABLE prompts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        hash TEXT NOT NULL UNIQUE,
        messages TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE candidate_sets (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        prompt_id INTEGER NOT NULL REFERENCES prompts(id),
        key TEXT UNIQUE,
        source TEXT NOT NULL,
        source_ref TEXT,
        model TEXT NOT NULL DEFAULT '{}',
        created REAL NOT NULL
    );
    CREATE TABLE candidates (
        set_id INTEGER NOT NULL REFERENCES candidate_sets(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        text TEXT NOT NULL,
        seed INTEGER,
        params TEXT NOT NULL DEFAULT '{}',
        adapters TEXT NOT NULL DEFAULT '[]',
        finish_reason TEXT,
        tokens INTEGER,
        mean_prob REAL,
        mean_model_prob REAL,
        PRIMARY KEY (set_id, idx)
    );
    CREATE TABLE rankings (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        set_id INTEGER NOT NULL REFERENCES candidate_sets(id) ON DELETE CASCADE,
        status TEXT NOT NULL,
        tiers TEXT NOT NULL,
        note TEXT NOT NULL DEFAULT '',
        duration_s REAL,
        created REAL NOT NULL
    );
    CREATE INDEX rankings_set ON rankings(set_id);
    """,
    # 2: best-of-N scores. Nullable: older sets, and sets ranked without a reward model, have none.
    """
    ALTER TABLE candidates ADD COLUMN reward REAL;
    ALTER TABLE candidate_sets ADD COLUMN reward_model TEXT;
    """,
    # 3: the conversation's own reply offered among the candidates (/rank); 0 for sampled answers.
    """
    ALTER TABLE candidates ADD COLUMN existing INTEGER NOT NULL DEFAULT 0;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class RankStoreError(ChatcliError):
    """The ranking store cannot be opened or used."""


@dataclass(frozen=True)
class RankedItem:
    """A candidate set with its latest ranking: what exports are made of."""

    set_id: int
    messages: list[dict]
    candidates: list[Candidate]
    ranking: Ranking
    model: dict
    source: str
    created: float  # when the ranking was submitted
    reward_model: str | None = None  # the reward model whose scores the candidates carry


@dataclass(frozen=True)
class Submission:
    """One submitted ranking (every submit counts, a re-ranking too), with the texts it ranked."""

    ranking_id: int
    set_id: int
    created: float  # when it was submitted
    ranking: Ranking
    messages: list[dict]
    texts: list[str]  # the set's candidate texts, by index
    latest: bool  # the set's latest ranking: the one exports use


def default_path() -> Path:
    """``rankings.sqlite3`` in the user data dir (``$CHATCLI_HOME/data`` when set)."""
    return data_file(DB_NAME, RankStoreError)


def messages_hash(messages: Sequence[dict]) -> str:
    text = json.dumps(list(messages), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class RankStore:
    """A handle on the ranking database; thread-safe (one connection, one lock)."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._lock = threading.RLock()

    @classmethod
    def open(cls, path: Path | str | None = None, *, timeout: float = 5.0) -> "RankStore":
        path = Path(path) if path is not None else default_path()
        # synchronous=FULL: fsync at every commit, so submitted means on disk.
        conn = open_db(
            path, what=f"ranking store {path}", error=RankStoreError, migrations=MIGRATIONS,
            synchronous="FULL", timeout=timeout,
        )
        return cls(conn, path)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "RankStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Hold the lock; an SQLite error (damaged columns or pages, locked, read-only) is one RankStoreError line."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as e:
                raise db_error(e, what=f"ranking store {self.path}", error=RankStoreError) from None

    # --- writing -------------------------------------------------------------------------------

    def add_set(
        self,
        messages: Sequence[dict],
        candidates: Sequence[Candidate],
        *,
        model: dict | None = None,
        source: str = "chat",
        source_ref: str | None = None,
        key: str | None = None,
        reward_model: str | None = None,
    ) -> int:
        """Store a generation of candidates (one transaction); returns its id.

        ``reward_model`` names the model behind the candidates' ``reward`` scores.
        With ``key``, a set already stored under that key is returned instead (resuming).
        """
        now = time.time()
        with self._guard(), Transaction(self._conn) as c:
            if key is not None:
                row = c.execute("SELECT id FROM candidate_sets WHERE key=?", (key,)).fetchone()
                if row is not None:
                    return int(row[0])
            h = messages_hash(messages)
            c.execute("INSERT OR IGNORE INTO prompts(hash, messages, created) VALUES (?,?,?)", (h, _dumps(list(messages)), now))
            prompt_id = int(c.execute("SELECT id FROM prompts WHERE hash=?", (h,)).fetchone()[0])
            cur = c.execute(
                "INSERT INTO candidate_sets(prompt_id, key, source, source_ref, model, reward_model, created)"
                " VALUES (?,?,?,?,?,?,?)",
                (prompt_id, key, source, source_ref, _dumps(model or {}), reward_model, now),
            )
            set_id = int(cur.lastrowid)
            c.executemany(
                "INSERT INTO candidates(set_id, idx, text, seed, params, adapters, finish_reason, tokens, mean_prob, mean_model_prob,"
                " reward, existing) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [(set_id, i, k.text, k.seed, _dumps(k.params), _dumps(k.adapters), k.finish_reason, k.tokens,
                  k.mean_prob, k.mean_model_prob, k.reward, int(k.existing)) for i, k in enumerate(candidates)],  # fmt: skip
            )
            return set_id

    def add_ranking(self, set_id: int, ranking: Ranking) -> int:
        """Store a ranking of set ``set_id``; durable when this returns."""
        n = self.candidate_count(set_id)
        if n == 0:
            raise RankStoreError(f"no candidate set {set_id} in {self.path}")
        order = ranking.order
        if ranking.status != "skipped" and sorted(order) != list(range(n)):
            raise ValueError(f"ranking tiers {ranking.tiers} do not cover the {n} candidates exactly once")
        with self._guard(), Transaction(self._conn) as c:
            cur = c.execute(
                "INSERT INTO rankings(set_id, status, tiers, note, duration_s, created) VALUES (?,?,?,?,?,?)",
                (set_id, ranking.status, _dumps([list(t) for t in ranking.tiers]), ranking.note, ranking.duration_s, time.time()),
            )
            return int(cur.lastrowid)

    # --- reading -------------------------------------------------------------------------------

    def set_for_key(self, key: str) -> int | None:
        with self._guard():
            row = self._conn.execute("SELECT id FROM candidate_sets WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else None

    def candidate_count(self, set_id: int) -> int:
        with self._guard():
            return int(self._conn.execute("SELECT COUNT(*) FROM candidates WHERE set_id=?", (set_id,)).fetchone()[0])

    def latest_ranking(self, set_id: int) -> Ranking | None:
        with self._guard():
            row = self._conn.execute(
                "SELECT tiers, status, note, duration_s FROM rankings WHERE set_id=? ORDER BY id DESC LIMIT 1", (set_id,)
            ).fetchone()
        return _ranking(row) if row else None

    def ranking_count(self) -> int:
        with self._guard():
            return int(self._conn.execute("SELECT COUNT(*) FROM rankings").fetchone()[0])

    def items(self, *, include_skipped: bool = False) -> list[RankedItem]:
        """Every candidate set whose latest ranking is not skipped (oldest first)."""
        with self._guard():
            rows = self._conn.execute(
                "SELECT s.id, p.messages, s.model, s.source, r.tiers, r.status, r.note, r.duration_s, r.created, s.reward_model"
                " FROM candidate_sets s JOIN prompts p ON p.id = s.prompt_id"
                " JOIN rankings r ON r.id = (SELECT MAX(id) FROM rankings WHERE set_id = s.id)"
                " ORDER BY r.created, s.id"
            ).fetchall()
            out = []
            for sid, messages, model, source, tiers, status, note, duration, created, reward_model in rows:
                if status == "skipped" and not include_skipped:
                    continue
                try:
                    out.append(RankedItem(
                        int(sid), json.loads(messages), self._candidates(int(sid)),
                        _ranking((tiers, status, note, duration)), json.loads(model or "{}"), source, float(created),
                        reward_model,
                    ))
                except (ValueError, TypeError, IndexError) as e:  # a cell edited or damaged outside chatcli
                    raise RankStoreError(f"ranking store {self.path} is damaged: candidate set {sid} cannot be read "
                                         f"({e}); move the file away to start a new one") from None
        return out

    def _candidates(self, set_id: int) -> list[Candidate]:
        rows = self._conn.execute(
            "SELECT idx, text, seed, params, adapters, finish_reason, tokens, mean_prob, mean_model_prob, reward, existing"
            " FROM candidates WHERE set_id=? ORDER BY idx", (set_id,),
        ).fetchall()
        return [
            Candidate(int(i), text, int(seed or 0), json.loads(params or "{}"), json.loads(adapters or "[]"),
                      finish or "stop", int(tokens or 0), mp, mmp, reward, bool(existing))  # fmt: skip
            for i, text, seed, params, adapters, finish, tokens, mp, mmp, reward, existing in rows
        ]

    def submissions(self) -> list[Submission]:
        """Every submitted ranking, re-rankings and skips included, oldest first, with its set's texts."""
        with self._guard():
            rows = self._conn.execute(
                "SELECT r.id, r.set_id, r.created, r.tiers, r.status, r.note, r.duration_s, p.messages,"
                " r.id = (SELECT MAX(id) FROM rankings WHERE set_id = r.set_id)"
                " FROM rankings r JOIN candidate_sets s ON s.id = r.set_id JOIN prompts p ON p.id = s.prompt_id"
                " ORDER BY r.id"
            ).fetchall()
            texts: dict[int, list[str]] = {}
            for sid, text in self._conn.execute(
                "SELECT set_id, text FROM candidates WHERE set_id IN (SELECT set_id FROM rankings) ORDER BY set_id, idx"
            ):
                texts.setdefault(int(sid), []).append(text)
            out = []
            for rid, sid, created, tiers, status, note, duration, messages, latest in rows:
                try:
                    out.append(Submission(int(rid), int(sid), float(created), _ranking((tiers, status, note, duration)),
                                          json.loads(messages), texts.get(int(sid), []), bool(latest)))  # fmt: skip
                except (ValueError, TypeError, IndexError) as e:  # a cell edited or damaged outside chatcli
                    raise RankStoreError(f"ranking store {self.path} is damaged: ranking {rid} cannot be read "
                                         f"({e}); move the file away to start a new one") from None
        return out

    def counts(self) -> dict:
        """Raw counts: prompts, candidate sets, candidates, rankings by status (all submissions)."""
        with self._guard():
            q = lambda sql: int(self._conn.execute(sql).fetchone()[0])  # noqa: E731
            by_status = dict(self._conn.execute("SELECT status, COUNT(*) FROM rankings GROUP BY status").fetchall())
            return {
                "prompts": q("SELECT COUNT(*) FROM prompts"),
                "candidate_sets": q("SELECT COUNT(*) FROM candidate_sets"),
                "candidates": q("SELECT COUNT(*) FROM candidates"),
                "submissions": q("SELECT COUNT(*) FROM rankings"),
                "submissions_by_status": {s: int(by_status.get(s, 0)) for s in ("ranked", "all_bad", "skipped")},
            }

    def integrity_ok(self) -> bool:
        with self._guard():
            return self._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


_shared: dict[Path, RankStore] = {}
_shared_lock = threading.Lock()


def shared_store(path: Path | str | None = None) -> RankStore:
    """One open store per database file for this process (the chat opens it on its first /rank)."""
    p = Path(path) if path is not None else default_path()
    with _shared_lock:
        store = _shared.get(p)
        if store is None:
            store = _shared[p] = RankStore.open(p)
        return store


def _ranking(row) -> Ranking:
    tiers, status, note, duration = row
    return Ranking(tuple(tuple(int(i) for i in t) for t in json.loads(tiers)), status, note or "", duration)


def _dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
