"""Rankings -> training data in the layouts trainers read (TRL's conversational formats, OASST trees).

Pairs follow the ranking's tiers (best first): ``all`` pairs every answer with
every answer of a lower tier, ``adjacent`` only with the next tier down,
``best-vs-rest`` only the best tier with every lower one. Answers in one tier
(a tie) never form a pair, and an "all bad" ranking forms none. Pairs come out
best-chosen first, in tier order, then in the order answers were placed.

Formats (one JSON object per line, exactly these keys):

* ``dpo``, ``reward``: ``{"prompt": [messages up to the last user turn],
  "chosen": [{"role": "assistant", ...}], "rejected": [{"role": "assistant", ...}]}``
* ``kto``: ``{"prompt": [...], "completion": [{"role": "assistant", ...}], "label": bool}``;
  the best tier is ``true``, every lower tier ``false``; every answer of an
  "all bad" ranking is ``false``; a ranking that is one big tie says nothing.
* ``sft``: ``{"messages": [...prompt, best answer]}`` (one line per best answer).
* ``oasst``: one message tree per ranking (prompter/assistant chain, the ranked
  answers as sibling replies with ``rank``, 0 = best; tied answers share a rank;
  ``null`` in an "all bad" ranking).

A truncated answer (cut at max_tokens, or stopped: :attr:`Candidate.truncated`) is
not a whole answer, so by default it is never a target: no ``sft`` line, no pair in
which it is ``chosen`` (``dpo``, ``reward``), no ``kto`` line labelled ``true``. It
still serves as a rejected answer, a ``false`` example and an OASST reply.
``include_truncated=True`` (``--include-truncated``) keeps everything; ``skipped``
counts what was left out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from chatcli.errors import UsageError
from chatcli_rank.ranking import Ranking
from chatcli_rank.store import RankedItem, messages_hash

FORMATS = ("dpo", "reward", "kto", "sft", "oasst")
PAIRS = ("all", "adjacent", "best-vs-rest")


def pairs(ranking: Ranking, mode: str = "all") -> list[tuple[int, int]]:
    """(chosen, rejected) candidate indexes implied by a ranking."""
    if mode not in PAIRS:
        raise UsageError(f"unknown --pairs {mode!r}: use all, adjacent or best-vs-rest")
    if ranking.status != "ranked":
        return []
    tiers = ranking.tiers
    out = []
    for a, upper in enumerate(tiers):
        if mode == "best-vs-rest" and a > 0:
            break
        lower_tiers = tiers[a + 1 : a + 2] if mode == "adjacent" else tiers[a + 1 :]
        for winner in upper:
            for lower in lower_tiers:
                out.extend((winner, loser) for loser in lower)
    return out


@dataclass
class Skipped:
    """What :func:`records` left out because the answer that would be the target is truncated."""

    truncated: int = 0


def records(items: Sequence[RankedItem], fmt: str, pair_mode: str = "all", *, include_truncated: bool = False,
            skipped: Skipped | None = None) -> Iterator[dict]:  # fmt: skip
    if fmt not in FORMATS:
        raise UsageError(f"unknown --format {fmt!r}: use {', '.join(FORMATS)}")
    if pair_mode not in PAIRS:
        raise UsageError(f"unknown --pairs {pair_mode!r}: use all, adjacent or best-vs-rest")
    skipped = skipped if skipped is not None else Skipped()
    for item in items:
        prompt = _prompt(item.messages)
        texts = [c.text for c in item.candidates]
        cut = set() if include_truncated else {c.index for c in item.candidates if c.truncated}
        r = item.ranking
        if fmt in ("dpo", "reward"):
            for w, l in pairs(r, pair_mode):
                if w in cut:
                    skipped.truncated += 1
                    continue
                yield {"prompt": prompt, "chosen": [_assistant(texts[w])], "rejected": [_assistant(texts[l])]}
        elif fmt == "kto":
            for row in _kto(prompt, texts, r):
                if row.pop("_index") in cut and row["label"]:
                    skipped.truncated += 1
                    continue
                yield row
        elif fmt == "sft":
            for i in r.best:
                if i in cut:
                    skipped.truncated += 1
                    continue
                yield {"messages": [*prompt, _assistant(texts[i])]}
        else:
            yield oasst_tree(item)


def _kto(prompt: list[dict], texts: list[str], r: Ranking) -> Iterator[dict]:
    """KTO rows, each with the candidate's ``_index`` (for the caller, removed before writing)."""
    if r.status == "skipped":
        return
    if r.status == "all_bad":
        labels = {i: False for i in range(len(texts))}
    elif len(r.tiers) < 2:
        return  # one big tie: nothing is better or worse
    else:
        labels = {i: k == 0 for i, k in r.tier_of().items()}
    for i in r.order:
        yield {"prompt": prompt, "completion": [_assistant(texts[i])], "label": labels[i], "_index": i}


def oasst_tree(item: RankedItem) -> dict:
    """An Open-Assistant style message tree: the conversation as a chain, the answers as ranked siblings."""
    tree_id = f"chatcli-{messages_hash(item.messages)[:16]}-{item.set_id}"
    system = next((m["content"] for m in item.messages if m["role"] == "system"), None)
    chain = _prompt([m for m in item.messages if m["role"] != "system"])
    ids = [f"{tree_id}-m{k}" for k in range(len(chain))]
    model = item.model.get("name") if isinstance(item.model, dict) else None
    tier = item.ranking.tier_of() if item.ranking.status == "ranked" else {}
    last = ids[-1] if ids else None
    replies = [
        _message(f"{tree_id}-c{c.index}", last, "assistant", c.text, rank=tier.get(c.index), synthetic=True, model_name=model)
        for c in sorted(item.candidates, key=lambda c: (tier.get(c.index, len(item.candidates)), c.index))
    ]
    for k in range(len(chain) - 1, -1, -1):  # build the chain bottom-up: each message holds the next
        m = chain[k]
        msg = _message(ids[k], ids[k - 1] if k else None, "prompter" if m["role"] == "user" else "assistant", m["content"])
        msg["replies"] = replies
        replies = [msg]
    tree = {"message_tree_id": tree_id, "tree_state": "ready_for_export", "prompt": replies[0] if chain else None}
    if system:
        tree["system"] = system
    if item.ranking.status == "all_bad":
        tree["all_bad"] = True
    if item.ranking.note:
        tree["note"] = item.ranking.note
    return tree


def _message(mid: str, parent: str | None, role: str, text: str, *, rank: int | None = None,
             synthetic: bool = False, model_name: str | None = None) -> dict:  # fmt: skip
    return {"message_id": mid, "parent_id": parent, "role": role, "text": text, "rank": rank,
            "synthetic": synthetic, "model_name": model_name, "replies": []}  # fmt: skip


def _prompt(messages: list[dict]) -> list[dict]:
    """Messages up to and including the last user turn, as plain role/content dicts."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=len(messages) - 1)
    return [{"role": m["role"], "content": m["content"]} for m in messages[: last + 1]]


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def write_jsonl(path: Path, rows: Iterator[dict]) -> int:
    """Write rows atomically (a temp file renamed into place); returns how many."""
    import os

    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    n = 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {path} ({e.strerror or e}); pick another path") from None
    return n
