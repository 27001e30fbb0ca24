"""The annotation queue: the ranking screen for one queued item after another, resumable.

An item counts as done once a ranking (or a skip) for it is stored; items are
recognised by a hash of their messages, candidate texts and seeds
(:attr:`QueueItem.key`), so running ``chatcli rank annotate FILE`` again
continues with the first item not done, whatever happened in between (Esc,
Ctrl+Q, a closed terminal, ``kill -9``). Each submit is stored before the next
item appears: the store is durable at every commit. The screens get the person's
judgements so far (the store's, then each new submit), for the contradiction notice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from textual.app import App
from textual.binding import Binding

from chatcli_rank.consistency import judgement, judgements
from chatcli_rank.jsonl import QueueItem
from chatcli_rank.screen import RankOutcome, RankScreen
from chatcli_rank.store import RankStore


def pending_items(store: RankStore, items: list[QueueItem]) -> list[QueueItem]:
    """The items without a stored ranking, in file order."""
    out = []
    for item in items:
        set_id = store.set_for_key(item.key)
        if set_id is None or store.latest_ranking(set_id) is None:
            out.append(item)
    return out


@dataclass
class Tally:
    ranked: int = 0
    all_bad: int = 0
    skipped: int = 0
    left_at: int | None = None  # file line of the item the person left on
    ranking_ids: list[int] = field(default_factory=list)


class AnnotateApp(App):
    TITLE = "chatcli rank annotate"
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True)]

    def __init__(self, store: RankStore, items: list[QueueItem], *, source: str, total: int | None = None) -> None:
        super().__init__()
        self.store = store
        self.items = items
        self.source = source
        self.total = total if total is not None else len(items)
        self.done_before = self.total - len(items)
        self.position = 0
        self.tally = Tally()
        self.earlier = judgements(store.submissions())  # grows with every submit of this session

    def on_mount(self) -> None:
        self._show_next()

    def _show_next(self) -> None:
        if self.position >= len(self.items):
            self.exit(self.tally)
            return
        item = self.items[self.position]
        k = self.done_before + self.position + 1
        title = f"Item {k} of {self.total} ({self.source}:{item.line}) — 1-9 pick best first · Enter submits · s skips · Esc stops"
        screen = RankScreen(item.messages, candidates=item.candidates, title=title, earlier=self.earlier,
                            on_done=lambda o, it=item: self._store(it, o))  # fmt: skip
        self.push_screen(screen, callback=self._after)

    def _store(self, item: QueueItem, outcome: RankOutcome) -> None:
        if outcome.ranking is None:
            self.tally.left_at = item.line
            return
        set_id = self.store.add_set(
            item.messages, item.candidates, model=item.model, source="queue",
            source_ref=f"{self.source}:{item.line}", key=item.key,
        )
        rid = self.store.add_ranking(set_id, outcome.ranking)
        self.tally.ranking_ids.append(rid)
        made = judgement(rid, set_id, time.time(), item.messages, [c.text for c in item.candidates], outcome.ranking)
        if made is not None:
            self.earlier.append(made)
        status = outcome.ranking.status
        if status == "ranked":
            self.tally.ranked += 1
        elif status == "all_bad":
            self.tally.all_bad += 1
        else:
            self.tally.skipped += 1

    def _after(self, outcome: RankOutcome | None) -> None:
        if outcome is None or outcome.ranking is None:
            self.exit(self.tally)
            return
        self.position += 1
        self._show_next()
