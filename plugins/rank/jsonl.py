"""Reading the annotation queue files, with every bad line named by its number.

``PROMPTS.jsonl``: one object per line, ``{"prompt": TEXT}`` (optionally with
``"system": TEXT``) or ``{"messages": [{"role", "content"}, ...]}`` ending with a
user message; an optional ``"id"`` is carried through.

``CANDIDATES.jsonl`` (what ``chatcli rank generate`` writes): ``{"messages": [...],
"candidates": [{"text", "seed", "params", "adapters", ...}, ...], "model": {...}}``
with 2 to 10 candidates.

Readers return the good items and a list of :class:`LineError` (blank lines are
not errors); the caller decides to skip the bad lines or refuse the file
(``--strict``). Nothing is written here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from chatcli.jsonl import LineError, read_objects
from chatcli_rank.candidates import MAX_N, MIN_N, Candidate

ROLES = ("system", "user", "assistant")
T = TypeVar("T")


@dataclass
class PromptItem:
    line: int
    messages: list[dict]
    id: str | None = None


@dataclass
class QueueItem:
    line: int
    messages: list[dict]
    candidates: list[Candidate]
    model: dict = field(default_factory=dict)
    id: str | None = None

    @property
    def key(self) -> str:
        """Identifies this item in the ranking store, so annotation resumes where it stopped."""
        body = json.dumps(
            [self.messages, [[c.text, c.seed] for c in self.candidates]],
            ensure_ascii=False, separators=(",", ":"), sort_keys=True,
        )
        return "queue:" + hashlib.sha256(body.encode("utf-8")).hexdigest()


def normalize_messages(value) -> list[dict]:
    """Check a message list and return it as plain role/content dicts; raises ValueError."""
    if not isinstance(value, list) or not value:
        raise ValueError('"messages" must be a non-empty list')
    out = []
    for k, m in enumerate(value, 1):
        if not isinstance(m, dict):
            raise ValueError(f"message {k} is not an object")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ValueError(f"message {k} has role {role!r}; use system, user or assistant")
        if not isinstance(content, str):
            raise ValueError(f'message {k} needs a "content" string')
        if role == "system" and k != 1:
            raise ValueError(f"message {k}: a system message can only come first")
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "user":
        raise ValueError("the last message must be from the user (the answers to rank respond to it)")
    return out


def _read(path: Path | str, parse: Callable[[int, dict], T]) -> tuple[list[T], list[LineError]]:
    """Parse each line's JSON object with ``parse(line_no, obj)``; a ValueError names the line."""
    rows, errors = read_objects(path)
    items: list[T] = []
    for n, obj in rows:
        try:
            items.append(parse(n, obj))
        except ValueError as e:
            errors.append(LineError(str(path), n, str(e)))
    errors.sort(key=lambda e: e.line)
    return items, errors


def _id(obj: dict) -> str | None:
    v = obj.get("id")
    return None if v is None else str(v)


def read_prompts(path: Path | str) -> tuple[list[PromptItem], list[LineError]]:
    return _read(path, _prompt_item)


def read_candidates(path: Path | str) -> tuple[list[QueueItem], list[LineError]]:
    return _read(path, _queue_item)


def _prompt_item(n: int, obj: dict) -> PromptItem:
    if "messages" in obj:
        messages = normalize_messages(obj["messages"])
    elif isinstance(obj.get("prompt"), str) and obj["prompt"].strip():
        system = obj.get("system")
        if system is not None and not isinstance(system, str):
            raise ValueError('"system" must be a string')
        messages = ([{"role": "system", "content": system}] if system is not None else []) + [
            {"role": "user", "content": obj["prompt"]}
        ]
    else:
        raise ValueError('needs "prompt" (a non-empty string) or "messages" (a list)')
    return PromptItem(n, messages, _id(obj))


def _queue_item(n: int, obj: dict) -> QueueItem:
    messages = normalize_messages(obj.get("messages"))
    cands = obj.get("candidates")
    if not isinstance(cands, list) or not MIN_N <= len(cands) <= MAX_N:
        raise ValueError(f'"candidates" must be a list of {MIN_N} to {MAX_N} answers')
    candidates = [Candidate.from_json(i, c) for i, c in enumerate(cands)]
    model = obj.get("model") or {}
    if not isinstance(model, dict):
        raise ValueError('"model" must be an object')
    return QueueItem(n, messages, candidates, model, _id(obj))
