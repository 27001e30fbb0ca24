"""A saved conversation from its rows: what can be read is shown, what cannot is named.

:func:`conversation_from_rows` builds the :class:`~chatcli.chat.session.Conversation`
that :meth:`chatcli.chat.store.Store.load_checked` read (its ``conversations`` row, its
``messages`` rows, its ``steps`` rows, in the columns the store selects). Each JSON cell
is read on its own (a message's ``meta``, a step's ``data``, the conversation's
``params`` and ``active``): a cell that does not parse, or parses to the wrong kind, is
left out and reported as an :class:`Unreadable`, and the rest of the conversation loads.
An answer whose steps cannot all be read keeps its text without steps (a gap would break
the token-to-text mapping); one still "streaming" in the file was cut off by a crash and
loads as cancelled. Pure: no I/O, no SQL.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from chatcli.chat.session import Conversation, Node, step_from_row
from chatcli.engine.events import Step
from chatcli.engine.params import SamplingParams
from chatcli.errors import ChatcliError


@dataclass(frozen=True)
class Unreadable:
    """One cell of a saved conversation that could not be read; the rest of it loads."""

    what: str  # "params", "active", "meta" or "steps"
    message: int | None = None  # the message it belongs to (meta, steps)

    def __str__(self) -> str:
        return {
            "params": "the sampling settings could not be read (the defaults are shown)",
            "active": "which branches were active could not be read (the newest are shown)",
            "meta": f"the details of message {self.message} (speed, token counts) could not be read",
            "steps": f"the steps of answer {self.message} could not be read (its text is shown without them)",
        }[self.what]


def conversation_from_rows(
    head: Sequence, msgs: Sequence[Sequence], step_rows: Sequence[Sequence]
) -> tuple[Conversation, list[Unreadable]]:
    """The conversation of ``head`` (id, title, created, updated, model, system, params, active),
    its ``msgs`` (id, parent, role, content, status, created, meta; by id) and ``step_rows``
    (msg_id, idx, data; by message and index), and the cells that could not be read."""
    problems: list[Unreadable] = []
    params = params_from_json(head[6])
    if params is None:
        problems.append(Unreadable("params"))
    conv = Conversation(
        id=int(head[0]), title=head[1], created=head[2], model=head[4], system=head[5],
        params=params or SamplingParams(),
    )
    conv.updated = head[3]
    for mid, parent, role, content, status, created, meta in msgs:
        # An answer still "streaming" in the file was cut off by a crash or kill.
        status = "cancelled" if status == "streaming" else status
        meta_d = json_cell(meta or "{}", dict)
        if meta_d is None:
            problems.append(Unreadable("meta", int(mid)))
        conv.insert(Node(int(mid), parent, role, content, [], status, created, meta_d or {}))
    broken: set[int] = set()
    for mid, idx, data in step_rows:
        node = conv.nodes.get(int(mid))
        if node is None or node.id in broken or idx != len(node.steps):
            continue  # a gap would break the token<->text mapping
        step = step_cell(idx, data)
        if step is None:  # the steps after it would leave a gap: the answer keeps its text, not its steps
            broken.add(node.id)
            problems.append(Unreadable("steps", node.id))
            continue
        node.steps.append(step)
    for node in conv.nodes.values():
        if node.role == "assistant" and not node.content.startswith(node.step_text):
            node.content = node.step_text  # a crash between a step batch and its content update
    active = json_cell(head[7] or "{}", dict)
    try:
        conv.active = {(None if k == "None" else int(k)): int(v) for k, v in (active or {}).items()}
    except (TypeError, ValueError):
        active = None
    if active is None:
        conv.active = {}  # the path then follows the newest child at each branch
        problems.append(Unreadable("active"))
    return conv, problems


def json_cell(text, kind: type):
    """The JSON value of one cell if it parses and is a ``kind``, else None."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, kind) else None


def step_cell(index: int, text) -> Step | None:
    row = json_cell(text, list)
    try:
        return step_from_row(index, row) if row is not None else None
    except (TypeError, ValueError, IndexError, KeyError):
        return None


def params_from_json(text: str | None) -> SamplingParams | None:
    """The saved parameters; None if the cell is unreadable.

    Unknown keys are ignored and a value this version refuses (written by a future
    version, or a seed >= 2**64 saved before seeds were checked) keeps its default,
    so one bad value does not reset the others.
    """
    d = json_cell(text or "{}", dict)
    if d is None:
        return None
    known = {k: v for k, v in d.items() if k in SamplingParams.__dataclass_fields__}
    if "stop" in known:  # a JSON list; anything else is not a stop list
        stop = known.pop("stop")
        if isinstance(stop, list) and all(isinstance(x, str) for x in stop):
            known["stop"] = tuple(stop)
    good = {}
    for key, value in known.items():
        try:
            SamplingParams(**{key: value})
        except (ValueError, TypeError, ChatcliError):
            continue
        good[key] = value
    return SamplingParams(**good)
