"""A damaged ranking store is one error line in `rank stats` and `rank export`, never a traceback."""

from __future__ import annotations

import sqlite3

from chatcli_rank.store import SCHEMA_VERSION, RankStore, default_path
from tests.cli_support import run as cli_run
from tests.rank_support import store_ranking


def run_cli(capsys, *argv):
    """``chatcli *argv`` in process: (exit code, stdout, stderr); argv may hold Paths and numbers."""
    return cli_run(capsys, *(str(a) for a in argv))


def _stats_and_export(capsys, tmp_path):
    for argv in (["rank", "stats"], ["rank", "export", "-f", "dpo", "-o", tmp_path / "out.jsonl"]):
        code, out, err = run_cli(capsys, *argv)
        assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
        yield err


def test_current_version_with_other_columns_is_one_line(capsys, tmp_path):
    path = default_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE prompts(id INTEGER PRIMARY KEY, something_else TEXT)")
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    for err in _stats_and_export(capsys, tmp_path):
        assert f"ranking store {path} is damaged (no such" in err and "move it away" in err


def test_corrupt_pages_are_one_line(capsys, tmp_path):
    with RankStore.open() as store:
        for i in range(40):
            store_ranking(store, [f"answer {i} " * 60, "short"], [[0], [1]])
        path = store.path
    with sqlite3.connect(path) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    data[4096 * 2: 4096 * 6] = b"\x55" * (4096 * 4)  # pages past the header
    path.write_bytes(bytes(data))
    for err in _stats_and_export(capsys, tmp_path):
        assert "damaged" in err


def test_a_malformed_json_cell_names_its_set(capsys, tmp_path):
    with RankStore.open() as store:
        store_ranking(store, ["good", "bad"], [[0], [1]])
        set_id = store_ranking(store, ["fine", "worse"], [[0], [1]])
        path = store.path
    with sqlite3.connect(path) as con:
        con.execute("UPDATE rankings SET tiers='[[0], [1' WHERE set_id=?", (set_id,))
    for err in _stats_and_export(capsys, tmp_path):
        assert f"candidate set {set_id} cannot be read" in err
