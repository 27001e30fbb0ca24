"""kill -9 during annotation: every submitted ranking survives, the store opens, annotation resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from chatcli_rank.annotate import AnnotateApp, pending_items
from chatcli_rank.jsonl import read_candidates
from chatcli_rank.ranking import Ranking
from chatcli_rank.screen import RankScreen
from chatcli_rank.store import RankStore
from tests.rank_support import candidates, conversation
from tests.tui_support import run, wait_for

ROOT = Path(__file__).resolve().parents[2]

# Annotates in a real Textual app (headless), prints each stored ranking id, and is killed
# while the ranking screen of item 4 is half done (a key pressed, not submitted).
ANNOTATOR = """
import asyncio, sys
sys.path.insert(0, sys.argv[3])
from chatcli_rank.annotate import AnnotateApp, pending_items
from chatcli_rank.jsonl import read_candidates
from chatcli_rank.screen import RankScreen
from chatcli_rank.store import RankStore

items, _ = read_candidates(sys.argv[1])
store = RankStore.open(sys.argv[2])
app = AnnotateApp(store, pending_items(store, items), source=sys.argv[1], total=len(items))

async def wait(pilot, cond):
    while not cond():
        await pilot.pause(0.01)

async def go():
    async with app.run_test(size=(100, 40)) as pilot:
        for k in range(len(items)):
            await wait(pilot, lambda: isinstance(app.screen, RankScreen) and app.screen.draft is not None)
            await pilot.press(str(k % 3 + 1))
            if k == 3:
                print("MID", flush=True)
                await asyncio.sleep(120)
            await pilot.press("enter")
            await wait(pilot, lambda: len(app.tally.ranking_ids) > k)
            print("SUBMITTED", app.tally.ranking_ids[-1], flush=True)

asyncio.run(go())
"""


def _queue(path: Path, n_items: int = 6) -> None:
    rows = []
    for k in range(n_items):
        cands = [c.to_json() for c in candidates([f"item {k} answer {i}" for i in range(3)])]
        rows.append(json.dumps({"messages": conversation(f"question {k}"), "candidates": cands}))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def test_kill_9_mid_annotation_keeps_every_submitted_ranking(tmp_path):
    queue, db = tmp_path / "queue.jsonl", tmp_path / "rankings.sqlite3"
    _queue(queue)
    proc = subprocess.Popen([sys.executable, "-c", ANNOTATOR, str(queue), str(db), str(ROOT)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
    submitted: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("SUBMITTED"):
                submitted.append(int(line.split()[1]))
            if line.strip() == "MID":
                break
        assert len(submitted) == 3, proc.stderr.read() if proc.poll() is not None else submitted
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    store = RankStore.open(db)  # opens after the crash (WAL recovery)
    assert store.integrity_ok()
    items, _ = read_candidates(queue)
    stored = store.items()
    assert store.ranking_count() == 3 and [i.set_id for i in stored] == [1, 2, 3]
    assert [i.ranking.best for i in stored] == [(0,), (1,), (2,)]  # what each key press chose
    assert [i.messages[-1]["content"] for i in stored] == ["question 0", "question 1", "question 2"]
    assert [i.line for i in pending_items(store, items)] == [4, 5, 6]

    async def resume():
        app = AnnotateApp(store, pending_items(store, items), source=str(queue), total=len(items))
        async with app.run_test(size=(100, 40)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, RankScreen) and app.screen.draft is not None)
            title = app.screen.title_text
            await pilot.press("escape")
        return title

    assert run(resume()).startswith(f"Item 4 of 6 ({queue}:4)")


WRITER = """
import sys
sys.path.insert(0, sys.argv[2])
from chatcli_rank.ranking import Ranking
from chatcli_rank.store import RankStore
from tests.rank_support import candidates, conversation
store = RankStore.open(sys.argv[1])
k = 0
while True:
    set_id = store.add_set(conversation(f"q{k}"), candidates(["a", "b", "c"]), model={"name": "m"})
    rid = store.add_ranking(set_id, Ranking(((2,), (0, 1)), "ranked", f"note {k}"))
    print(rid, flush=True)
    k += 1
"""


def test_kill_9_while_writing_as_fast_as_possible_loses_nothing_committed(tmp_path):
    db = tmp_path / "rankings.sqlite3"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(ROOT)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
    acked: list[int] = []
    try:
        while len(acked) < 40:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            acked.append(int(line))
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: a transaction may be half written
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    store = RankStore.open(db)
    assert store.integrity_ok()
    items = {i.set_id: i for i in store.items()}
    assert store.ranking_count() >= len(acked)
    for rid in acked:  # ranking k belongs to set k here
        assert items[rid].ranking == Ranking(((2,), (0, 1)), "ranked", f"note {rid - 1}")
    # the store takes new rankings after the crash
    set_id = store.add_set(conversation("after"), candidates(["x", "y"]))
    store.add_ranking(set_id, Ranking(((1,), (0,))))
    assert store.latest_ranking(set_id).best == (1,)
