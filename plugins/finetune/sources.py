"""Training data from chatcli's own stores: saved conversations and saved rankings.

* ``--from-history [IDS|all]``: SFT records ``{"messages": [...]}`` from the history
  database (:mod:`chatcli.chat.store`), one per conversation: its system prompt and the
  active branch (what the person last saw), so every assistant turn on it is a
  target. A conversation is cut before its first answer that did not finish
  (stopped, failed, empty): a truncated answer would teach the model to stop mid-way.
* ``--from-rankings``: the ranking store through the rank plugin's own exporter
  (:func:`chatcli_rank.export.records`, the pairing of ``chatcli rank export --pairs
  all``): best answers for ``sft``, chosen/rejected pairs for ``dpo`` and ``reward``;
  truncated answers (cut at max_tokens, or stopped) are never a target, as in the export.

:func:`materialize` writes the records to ``<data dir>/finetune/<kind>-<source>-<hash>.jsonl``,
named by their content: the same saved data gives the same path, so ``--resume``
(which insists on the same ``data``) works, and the file is kept as a record of
what a run saw.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from chatcli.errors import UsageError

FINISHED = ("stop", "length")  # answers that ended on their own (or at max_tokens)


def parse_ids(text: str | None) -> list[int] | None:
    """``all`` (or empty) -> None; ``3,5,9`` / ``3 5`` -> [3, 5, 9]."""
    if text is None or text.strip().lower() in ("", "all"):
        return None
    try:
        ids = [int(p) for p in text.replace(",", " ").split()]
    except ValueError:
        raise UsageError(f"--from-history takes 'all' or conversation ids like 3,5,9 (see chatcli history), not {text!r}") from None
    if any(i < 1 for i in ids):
        raise UsageError("conversation ids are positive numbers (see /history)")
    return list(dict.fromkeys(ids))


def conversation_messages(conv) -> list[dict]:
    """The system prompt and the active branch, cut before the first unfinished answer."""
    out: list[dict] = [{"role": "system", "content": conv.system}] if conv.system else []
    for node in conv.path():
        if node.role == "assistant" and (node.status not in FINISHED or not node.content.strip()):
            break
        out.append({"role": node.role, "content": node.content})
    return out


def history_records(ids: Sequence[int] | None = None, store_path: Path | str | None = None,
                    warn: Callable[[str], None] = lambda m: None) -> list[dict]:  # fmt: skip
    """SFT records from saved conversations (``ids`` None: all of them, oldest first)."""
    from chatcli.chat.store import Store

    store = Store.open(store_path)
    try:
        known = {s.id for s in store.list()}
        if ids is None:
            ids = sorted(known)
        else:
            missing = [i for i in ids if i not in known]
            if missing:
                raise UsageError(f"no saved conversation #{missing[0]} in {store.path}: see 'chatcli history' for ids")
        rows = []
        for cid in ids:
            messages = conversation_messages(store.load(cid))
            if not any(m["role"] == "assistant" for m in messages):
                warn(f"warning: conversation #{cid} has no finished answer to learn from; skipped")
                continue
            while messages[-1]["role"] != "assistant":  # a trailing unanswered question teaches nothing
                messages.pop()
            rows.append({"messages": messages})
    finally:
        store.close()
    if not rows:
        raise UsageError("no saved conversation has a finished answer to learn from: chat first (or give a data FILE)")
    return rows


def ranking_records(kind: str, store_path: Path | str | None = None, pairs: str = "all") -> list[dict]:
    """Records of the rank plugin's export: ``sft`` best answers, ``dpo``/``reward`` pairs."""
    from chatcli_rank.export import Skipped, records
    from chatcli_rank.store import RankStore

    skipped = Skipped()  # truncated answers are never targets (rank export's default)
    with RankStore.open(store_path) as store:
        items = store.items()
        rows = list(records(items, "sft" if kind == "sft" else kind, pairs, skipped=skipped))
    if not rows:
        what = "best answers" if kind == "sft" else "ranked pairs (a ranking with at least two tiers)"
        cut = f"; {skipped.truncated} left out as truncated" if skipped.truncated else ""
        raise UsageError(f"no {what} in the ranking store ({len(items)} ranking(s){cut}): "
                         "rank answers with /rank or 'chatcli rank annotate'")  # fmt: skip
    return rows


def materialize(rows: Sequence[dict], kind: str, source: str, folder: Path | None = None) -> Path:
    """Write ``rows`` as JSONL named by their content (same data -> same path); returns the path.

    A record holding half of a UTF-16 surrogate pair (a store cell written with a broken
    ``\\ud83d`` escape) is refused, as in a data file: it cannot be written as UTF-8.
    """
    from chatcli.jsonl import lone_surrogate

    for k, row in enumerate(rows, 1):
        half = lone_surrogate(row)
        if half is not None:
            store = "history" if source == "history" else "ranking store"
            raise UsageError(f"record {k} from the {store} holds \\u{ord(half):04x}, half of a UTF-16 surrogate pair, "
                             "not text; remove that entry from the store and retry")
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    if folder is None:
        from chatcli.paths import data_dir

        folder = data_dir() / "finetune"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}-{source}-{digest}.jsonl"
    if not path.is_file():
        # Per-process temp name: torchrun ranks build the same file side by side.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return path


def build_data(kind: str, *, from_history: str | None = None, from_rankings: bool = False,
               history_db: Path | str | None = None, rank_db: Path | str | None = None,
               warn: Callable[[str], None] = lambda m: None) -> Path:  # fmt: skip
    """The data file for ``--from-history`` / ``--from-rankings`` (exactly one of them)."""
    if (from_history is not None) == bool(from_rankings):
        raise UsageError("give a DATA file, --from-history [IDS|all] or --from-rankings (one of them)")
    if from_history is not None:
        if kind != "sft":
            raise UsageError(f"--from-history builds SFT data; {kind} needs preference pairs: use --from-rankings")
        return materialize(history_records(parse_ids(from_history), history_db, warn), kind, "history")
    return materialize(ranking_records(kind, rank_db), kind, "rankings")
