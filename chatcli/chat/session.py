"""A conversation: a tree of messages with branches, the per-token steps of every answer, and its settings.

The tree is what makes branching cheap to reason about: every message has a
parent (``None`` for the first user message), messages with the same parent are
*siblings* (a retried answer, an answer branched at some token), and the
conversation remembers which child of each parent is active. The *path* (root to
leaf along active children) is what the model sees and what the transcript shows.

Answers keep their :class:`~chatcli.engine.events.Step` list so the probability
view works for any token, also after a restart (the store saves them). The
invariant front ends rely on: for an assistant message, ``content`` starts with
the concatenation of its steps' ``text`` (a tail the engine flushed without a
step, e.g. held-back bytes of a stopped answer, may follow).

This module is pure data: no engine, no I/O. :mod:`chatcli.chat.core` drives it
and :mod:`chatcli.chat.store` persists it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from chatcli.chat.answer_record import describe
from chatcli.engine.events import Step, TopToken, text_token_id
from chatcli.engine.params import SamplingParams
from chatcli.errors import UsageError

Role = str  # "user" | "assistant"
# Status of an assistant message: "streaming" while tokens arrive, then the finish reason
# ("stop", "length", "cancelled" = stopped by the person, "error").
FINISHED = ("stop", "length", "cancelled", "error")


@dataclass
class Node:
    """One message of the tree."""

    id: int
    parent: int | None
    role: Role
    content: str = ""
    steps: list[Step] = field(default_factory=list)
    status: str = "stop"
    created: float = field(default_factory=time.time)
    # tokens_per_s, ttft_s, prompt_tokens, completion_tokens, forced_at, error; and what produced
    # an answer: params, model, system, adapters, seed_used, dropped_messages (chatcli.chat.answer_record)
    meta: dict = field(default_factory=dict)

    @property
    def ids(self) -> list[int]:
        """Token ids of the answer so far (assistant messages)."""
        return [s.id for s in self.steps]

    @property
    def stopped(self) -> bool:
        return self.status == "cancelled"

    @property
    def step_text(self) -> str:
        return "".join(s.text for s in self.steps)


def step_to_row(step: Step) -> list:
    """A compact JSON-able form of a step (for the store and exports).

    Values a remote backend did not report (NaN) are stored as null; a partial step
    (alternatives limited to what the server returned) gets an eighth element ``1``.
    """
    row = [
        step.id, step.token, step.text, _opt(step.prob), _opt(step.model_prob), _opt(step.entropy),
        [[t.id, t.token, _opt(t.prob), _opt(t.model_prob)] for t in step.top],
    ]
    if step.partial:
        row.append(1)
    return row


def step_from_row(index: int, row: Sequence) -> Step:
    sid, token, text, prob, model_prob, entropy, top = row[:7]
    return Step(
        index=index, id=int(sid), token=token, text=text, prob=_float(prob),
        model_prob=_float(model_prob), entropy=_float(entropy),
        top=tuple(TopToken(int(t[0]), t[1], _float(t[2]), _float(t[3])) for t in top),
        partial=len(row) > 7 and bool(row[7]),
    )


def _opt(x: float) -> float | None:
    return None if math.isnan(x) else x


def _float(x) -> float:
    return math.nan if x is None else float(x)


def forced_step(original: Step, token_id: int) -> Step:
    """The step a branch starts with: the original step's distribution, another token chosen.

    The distribution is the one the model produced at that position (nothing was
    resampled), so prob/model_prob come from ``top``; the token is one of them.
    """
    alt = next((t for t in original.top if t.id == token_id), None)
    if alt is None:
        raise UsageError(f"token id {token_id} is not among the alternatives of step {original.index}; pick one the panel shows")
    return replace(original, id=alt.id, token=alt.token, text=alt.token, prob=alt.prob, model_prob=alt.model_prob)


class Conversation:
    """Messages as a tree, the active path through it, the system prompt and sampling parameters."""

    def __init__(
        self,
        *,
        id: int | None = None,
        title: str = "",
        system: str | None = None,
        params: SamplingParams | None = None,
        model: str | None = None,
        created: float | None = None,
    ) -> None:
        self.id = id  # the store's id; None while unsaved (or with --no-save)
        self.title = title
        self.system = system
        self.params = params or SamplingParams()
        self.model = model
        self.created = created if created is not None else time.time()
        self.updated = self.created
        self.nodes: dict[int, Node] = {}
        # parent id (None for roots) -> the active child's id
        self.active: dict[int | None, int] = {}
        self._next_id = 1

    # --- structure -------------------------------------------------------------------------

    def add(self, role: Role, content: str = "", parent: int | None = None, *, status: str = "stop") -> Node:
        """Append a message under ``parent`` and make it the active child there."""
        if role not in ("user", "assistant"):
            raise ValueError(f"bad role {role!r}")
        if parent is not None and parent not in self.nodes:
            raise KeyError(parent)
        node = Node(id=self._next_id, parent=parent, role=role, content=content, status=status)
        self._next_id += 1
        self.nodes[node.id] = node
        self.active[parent] = node.id
        self.updated = time.time()
        if not self.title and role == "user":
            self.title = make_title(content)
        return node

    def insert(self, node: Node) -> None:
        """Put a node with a known id back (loading from the store)."""
        self.nodes[node.id] = node
        self._next_id = max(self._next_id, node.id + 1)

    def children(self, parent: int | None) -> list[Node]:
        return sorted((n for n in self.nodes.values() if n.parent == parent), key=lambda n: n.id)

    def path(self) -> list[Node]:
        """Root to leaf along the active children."""
        out: list[Node] = []
        parent: int | None = None
        while True:
            child_id = self.active.get(parent)
            if child_id is None or child_id not in self.nodes:
                kids = self.children(parent)
                if not kids:
                    return out
                child_id = kids[-1].id  # a tree loaded without an active map: newest wins
                self.active[parent] = child_id
            node = self.nodes[child_id]
            out.append(node)
            parent = node.id

    @property
    def leaf(self) -> Node | None:
        p = self.path()
        return p[-1] if p else None

    def siblings(self, node_id: int) -> tuple[list[Node], int]:
        """The node's siblings (itself included, oldest first) and its position among them."""
        node = self.nodes[node_id]
        sibs = self.children(node.parent)
        return sibs, next(i for i, n in enumerate(sibs) if n.id == node_id)

    def switch_sibling(self, node_id: int, delta: int) -> Node:
        """Make the sibling ``delta`` places away active; returns it (clamped at the ends)."""
        sibs, i = self.siblings(node_id)
        j = max(0, min(len(sibs) - 1, i + delta))
        self.active[sibs[j].parent] = sibs[j].id
        return sibs[j]

    def select(self, node_id: int) -> None:
        """Make ``node_id`` and its ancestors active (so it lies on the path)."""
        node: Node | None = self.nodes[node_id]
        while node is not None:
            self.active[node.parent] = node.id
            node = self.nodes.get(node.parent) if node.parent is not None else None

    # --- what the model sees ---------------------------------------------------------------

    def messages(self, before: Node | None = None) -> list[dict]:
        """Chat messages (system first) along the path, up to but excluding ``before``."""
        out: list[dict] = []
        if self.system:
            out.append({"role": "system", "content": self.system})
        for node in self.path():
            if before is not None and node.id == before.id:
                break
            out.append({"role": node.role, "content": node.content})
        return out

    def is_empty(self) -> bool:
        return not self.nodes

    # --- export ----------------------------------------------------------------------------

    def to_json(self, *, steps: bool = True, all_branches: bool = False) -> dict:
        nodes = list(self.nodes.values()) if all_branches else self.path()
        return {
            "id": self.id,
            "title": self.title,
            "model": self.model,
            "created": self.created,
            "updated": self.updated,
            "system": self.system,
            "params": self.params.to_json(),
            "messages": [node_to_json(n, steps=steps) for n in nodes],
        }

    def to_markdown(self) -> str:
        lines = [f"# {self.title or 'Conversation'}", ""]
        if self.model:
            lines.append(f"*model:* `{self.model}`  ")
        p = self.params
        lines.append(  # the settings now; each answer is followed by those it was generated with
            f"*sampling now:* temperature {p.temperature}, top_k {p.top_k}, top_p {p.top_p}, "
            f"min_p {p.min_p}, repetition_penalty {p.repetition_penalty}, seed {p.seed}"
        )
        lines.append("")
        if self.system:
            lines += ["## System", "", self.system, ""]
        for node in self.path():
            who = "You" if node.role == "user" else "Assistant"
            note = "" if node.role == "user" or node.status == "stop" else f" *({status_label(node.status)})*"
            lines += [f"## {who}{note}", "", node.content, ""]
            made_with = describe(node.meta, self.model) if node.role == "assistant" else ""
            if made_with:
                lines += [f"*generated with:* {made_with}", ""]
        return "\n".join(lines).rstrip() + "\n"


def node_to_json(node: Node, *, steps: bool = True) -> dict:
    out = {
        "id": node.id,
        "parent": node.parent,
        "role": node.role,
        "content": node.content,
        "status": node.status,
        "created": node.created,
        "meta": node.meta,
    }
    if steps and node.role == "assistant":
        out["steps"] = [s.to_json() for s in node.steps]
    return out


def status_label(status: str) -> str:
    return {
        "stop": "done",
        "length": "cut at max_tokens",
        "cancelled": "stopped",
        "error": "error",
        "streaming": "streaming",
    }.get(status, status)


def make_title(text: str, width: int = 60) -> str:
    """A one-line title from the first user message."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1].rstrip() + "…"


def steps_from_json(items: Iterable[dict]) -> list[Step]:
    """Steps from ``Step.to_json()`` dicts (exports; null ids and probabilities come from a remote backend)."""

    def tid(i, token: str) -> int:
        return text_token_id(token) if i is None else i

    return [
        Step(
            index=i, id=tid(d["id"], d["token"]), token=d["token"], text=d["text"], prob=_float(d["prob"]),
            model_prob=_float(d["model_prob"]), entropy=_float(d["entropy"]),
            top=tuple(TopToken(tid(t["id"], t["token"]), t["token"], _float(t["prob"]), _float(t["model_prob"])) for t in d["top"]),
            partial=bool(d.get("partial", False)),
        )
        for i, d in enumerate(items)
    ]


def export_files(conv: Conversation, path: str | None = None) -> tuple[Path, Path]:
    """Write ``conv`` as ``PATH.md`` and ``PATH.json`` (default ``./chatcli-ID``); returns both paths."""
    if conv.is_empty():
        raise UsageError("nothing to save yet; send a message first")
    if path:
        base = Path(path).expanduser()
        if base.suffix.lower() in (".md", ".json", ".markdown"):
            base = base.with_suffix("")
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path.cwd() / f"chatcli-{conv.id or stamp}"
    md, js = base.with_suffix(".md"), base.with_suffix(".json")
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(conv.to_markdown(), encoding="utf-8")
        js.write_text(dumps(conv.to_json()) + "\n", encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot write {base}.md/.json ({e.strerror or e}); pick another path") from None
    return md, js


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
