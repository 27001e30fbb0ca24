"""The conversation tree: paths, siblings, what the model sees, forced steps, exports."""

from __future__ import annotations

import json

import pytest

from chatcli.engine.events import Step, TopToken
from chatcli.errors import UsageError
from chatcli.chat.session import Conversation, forced_step, make_title, step_from_row, step_to_row, steps_from_json


def _step(i: int, tid: int, text: str) -> Step:
    top = (TopToken(tid, text, 0.6, 0.5), TopToken(tid + 100, "x" + text, 0.3, 0.25))
    return Step(index=i, id=tid, token=text, text=text, prob=0.6, model_prob=0.5, entropy=1.25, top=top)


def test_path_follows_active_children_and_siblings_switch():
    c = Conversation(system="Be brief.")
    u = c.add("user", "hello")
    a1 = c.add("assistant", "first", parent=u.id)
    a2 = c.add("assistant", "second", parent=u.id)  # a retry: the newest sibling becomes active
    assert [n.content for n in c.path()] == ["hello", "second"]
    sibs, i = c.siblings(a2.id)
    assert [s.id for s in sibs] == [a1.id, a2.id] and i == 1
    assert c.switch_sibling(a2.id, -1).id == a1.id
    assert [n.content for n in c.path()] == ["hello", "first"]
    assert c.switch_sibling(a1.id, -5).id == a1.id  # clamped
    # a follow-up continues from the active sibling
    u2 = c.add("user", "more", parent=c.leaf.id)
    assert u2.parent == a1.id
    c.select(a2.id)
    assert [n.content for n in c.path()] == ["hello", "second"]


def test_messages_include_system_and_stop_before_a_node():
    c = Conversation(system="S")
    u = c.add("user", "q1")
    a = c.add("assistant", "r1", parent=u.id)
    u2 = c.add("user", "q2", parent=a.id)
    a2 = c.add("assistant", "", parent=u2.id)
    assert c.messages(before=a2) == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "r1"},
        {"role": "user", "content": "q2"},
    ]
    c.system = None
    assert c.messages()[0] == {"role": "user", "content": "q1"}


def test_path_recovers_without_active_map():
    c = Conversation()
    u = c.add("user", "q")
    c.add("assistant", "old", parent=u.id)
    c.add("assistant", "new", parent=u.id)
    c.active.clear()
    assert [n.content for n in c.path()] == ["q", "new"]


def test_forced_step_keeps_the_distribution_and_changes_the_token():
    s = _step(3, 7, " Paris")
    f = forced_step(s, 107)
    assert (f.id, f.token, f.text, f.prob, f.model_prob) == (107, "x Paris", "x Paris", 0.3, 0.25)
    assert f.top == s.top and f.entropy == s.entropy and f.index == 3
    assert f.rank == 2
    with pytest.raises(UsageError, match="not among the alternatives"):
        forced_step(s, 9999)


def test_step_rows_round_trip():
    s = _step(0, 5, "é")
    assert step_from_row(0, json.loads(json.dumps(step_to_row(s)))) == s
    assert steps_from_json([s.to_json()]) == [s]


def test_exports_and_title():
    c = Conversation(system="Sys", model="m")
    u = c.add("user", "What is   the capital\nof France?")
    a = c.add("assistant", "Paris.", parent=u.id)
    a.steps = [_step(0, 1, "Paris"), _step(1, 2, ".")]
    a.status = "cancelled"
    assert c.title == "What is the capital of France?"
    md = c.to_markdown()
    assert "## System" in md and "## Assistant *(stopped)*" in md and "Paris." in md
    js = c.to_json()
    assert js["messages"][1]["steps"][0]["token"] == "Paris"
    assert js["params"]["temperature"] == c.params.temperature
    assert make_title("x" * 100).endswith("…") and len(make_title("x" * 100)) == 60
