"""The shared chat state machine: jobs, streaming into the tree, stop/continue, branch, settings, export."""

from __future__ import annotations

import json
import threading

import pytest

from chatcli.chat.core import ChatCore
from chatcli.engine.events import Done, Notice, Step
from chatcli.engine.params import SamplingParams
from chatcli.errors import ChatcliError, UsageError
from chatcli.chat.store import Store
from tests.fake_engine import FakeEngine


def _core(**kw) -> ChatCore:
    return ChatCore(FakeEngine(length=kw.pop("length", 20)), params=SamplingParams(temperature=0.9, seed=7), **kw)


def test_send_streams_steps_into_the_answer():
    core = _core()
    events = list(core.run(core.send("hello")))
    steps = [e for e in events if isinstance(e, Step)]
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reason == "stop"
    answer = core.conv.leaf
    assert answer.role == "assistant" and answer.status == "stop"
    assert answer.steps == steps and [s.index for s in steps] == list(range(20))
    assert answer.content == "".join(s.text for s in steps) == done.text
    assert answer.meta["completion_tokens"] == 20 and answer.meta["params"]["seed"] == 7
    # the engine saw the system-less conversation up to the new answer
    assert core.engine.calls[-1]["messages"] == [{"role": "user", "content": "hello"}]


def test_listeners_hear_what_happens_and_two_cores_hear_only_their_own():
    heard: list[tuple[str, dict]] = []
    core = _core(length=3, listeners=[lambda event, **fields: heard.append((event, fields))])
    other = _core(length=3)  # no listeners: nothing process-wide carries its events anywhere
    list(other.run(other.send("elsewhere")))
    list(core.run(core.send("hello")))
    assert [e for e, _ in heard] == ["message_added", "step_generated", "step_generated", "step_generated", "answer_finished"]
    user, answer = core.conv.path()
    assert heard[0][1] == {"message": user, "conversation": core.conv}
    assert heard[1][1]["step"] is answer.steps[0] and heard[1][1]["message"] is answer
    assert heard[-1][1]["done"].finish_reason == "stop" and heard[-1][1]["message"] is answer
    core.announce("adapter_loaded", name="sft", info=None)  # what the adapter commands announce
    assert heard[-1] == ("adapter_loaded", {"name": "sft", "info": None})


def test_stop_then_continue_uses_the_answer_tokens_as_prefix():
    core = _core(length=200)
    cancel = threading.Event()
    stream = core.run(core.send("long one"), cancel)
    for i, ev in enumerate(stream):
        if i == 9:
            cancel.set()
    answer = core.conv.leaf
    assert answer.status == "cancelled" and len(answer.steps) == 10
    stopped_ids = answer.ids
    job = core.continue_()
    assert job.node is answer and job.prefix_ids == stopped_ids
    list(core.run(job))
    assert answer.status == "stop" and answer.ids[:10] == stopped_ids and len(answer.steps) == 200
    assert [s.index for s in answer.steps] == list(range(200))
    assert answer.content == answer.step_text
    assert core.engine.calls[-1]["prefix"] == stopped_ids
    with pytest.raises(UsageError, match="ended normally"):
        core.continue_()


def test_closing_the_stream_early_marks_the_answer_stopped():
    core = _core(length=50)
    stream = core.run(core.send("x"))
    for _ in range(5):
        next(stream)
    stream.close()
    assert core.conv.leaf.status == "cancelled" and len(core.conv.leaf.steps) == 5
    assert core.last_done.finish_reason == "cancelled"


def test_branch_forces_the_alternative_and_keeps_the_original_as_sibling():
    core = _core()
    list(core.run(core.send("pick a word")))
    original = core.conv.leaf
    at = 4
    alt = next(t for t in original.steps[at].top if t.id != original.steps[at].id)
    job = core.branch(original.id, at, alt.id)
    assert job.prefix_ids == original.ids[:at] + [alt.id]
    list(core.run(job))
    branch = core.conv.leaf
    assert branch.id != original.id and branch.parent == original.parent
    assert branch.steps[:at] == original.steps[:at]
    forced = branch.steps[at]
    assert forced.id == alt.id and forced.model_prob == alt.model_prob and forced.top == original.steps[at].top
    assert branch.meta["forced_at"] == at and branch.meta["branched_from"] == original.id
    assert branch.content.startswith("".join(s.text for s in original.steps[:at]) + alt.token)
    sibs, i = core.conv.siblings(branch.id)
    assert [s.id for s in sibs] == [original.id, branch.id] and i == 1
    assert core.switch_sibling(branch.id, -1).id == original.id
    assert core.conv.leaf.id == original.id
    with pytest.raises(UsageError):
        core.branch(original.id, 999, alt.id)
    with pytest.raises(UsageError):
        core.branch(original.parent, 0, alt.id)


def test_retry_adds_a_sibling_answer():
    core = _core()
    list(core.run(core.send("q")))
    first = core.conv.leaf
    core.conv.params = core.conv.params.with_(seed=8)
    list(core.run(core.retry()))
    second = core.conv.leaf
    assert second.parent == first.parent and second.id != first.id
    assert core.engine.calls[-1]["messages"] == core.engine.calls[0]["messages"]
    assert second.content != first.content  # another seed, another answer


def test_set_param_validates_and_changes_nothing_on_error():
    core = _core()
    assert core.set_param("temp", "0.3") == "temperature = 0.3"
    assert core.conv.params.temperature == 0.3
    before = core.conv.params
    for name, value in [("temperature", "-1"), ("top_p", "0"), ("top_k", "2.5"), ("max_tokens", "x"), ("tempreture", "1")]:
        with pytest.raises(UsageError) as e:
            core.set_param(name, value)
        assert "\n" not in e.value.message
        assert core.conv.params == before
    with pytest.raises(UsageError, match="did you mean temperature"):
        core.set_param("tempreture", "1")
    assert core.set_param("top_p", "off") == "top_p = 1.0 (off)"
    assert core.set_param("seed", "none") == "seed = none" and core.conv.params.seed is None
    assert core.set_param("top_shown", "8") == "top_shown = 8" and core.conv.params.top_n == 8
    list(core.run(core.send("q")))
    assert len(core.conv.leaf.steps[0].top) == 8


def test_error_from_the_engine_ends_with_done_error():
    core = ChatCore(FakeEngine(fail_after=3))
    events = list(core.run(core.send("q")))
    assert events[-1].finish_reason == "error" and "NaN" in events[-1].error
    assert core.conv.leaf.status == "error" and len(core.conv.leaf.steps) == 3


def test_notices_pass_through():
    core = ChatCore(FakeEngine(length=3, drop_notice_after_turns=1))
    list(core.run(core.send("a")))
    events = list(core.run(core.send("b")))
    assert isinstance(events[0], Notice) and "dropped 1 older turn" in events[0].message


def test_engine_required_and_empty_message():
    core = ChatCore(None)
    with pytest.raises(ChatcliError, match="still loading"):
        core.send("hi")
    core.attach_engine(FakeEngine())
    with pytest.raises(UsageError, match="empty"):
        core.send("   ")
    assert core.conv.is_empty()


def test_raw_prompt_and_context_usage():
    core = _core()
    core.set_system("Be brief.")
    assert core.context_usage() == (0, 2048)
    list(core.run(core.send("hello")))
    raw = core.raw_prompt()
    assert raw.startswith("<|im_start|>system\nBe brief.<|im_end|>") and raw.endswith("<|im_start|>assistant\n")
    used, total = core.context_usage()
    assert used == core.conv.leaf.meta["prompt_tokens"] + 20 and total == 2048


def test_export_writes_markdown_and_json(tmp_path):
    core = _core()
    with pytest.raises(UsageError):
        core.export(str(tmp_path / "x"))
    list(core.run(core.send("hello")))
    md, js = core.export(str(tmp_path / "out.md"))
    assert md == tmp_path / "out.md" and js == tmp_path / "out.json"
    assert "## You" in md.read_text() and core.conv.leaf.content in md.read_text()
    data = json.loads(js.read_text())
    assert data["messages"][1]["steps"][0]["top"]
    with pytest.raises(UsageError, match="cannot write"):
        core.export("/proc/definitely/not/here")


def test_new_clear_and_resume(tmp_path):
    store = Store.open(tmp_path / "h.db")
    core = ChatCore(FakeEngine(length=5), store=store, system="S", params=SamplingParams(temperature=0.5))
    list(core.run(core.send("first chat")))
    first_id = core.conv.id
    core.set_param("temperature", "1.2")
    core.set_system("T")
    core.new_conversation(keep_system=True)
    assert core.conv.system == "T" and core.conv.params.temperature == 1.2 and core.conv.is_empty()
    core.new_conversation(keep_system=False)  # /new: the default system prompt, the /set values kept
    assert core.conv.system == "S" and core.conv.params.temperature == 1.2
    assert core.changed_params() == ["temperature=1.2"]
    conv = core.resume(first_id)
    assert conv.id == first_id and conv.params.temperature == 1.2 and conv.leaf.steps
    list(core.run(core.send("follow-up")))
    assert core.engine.calls[-1]["messages"][1]["content"] == "first chat"
    assert core.resume(None).id == first_id  # the latest
    with pytest.raises(UsageError, match="no conversation"):
        core.resume(999)
    # --resume gives a string: digits, or "latest"/"last"/"" for the latest
    assert core.resume(str(first_id)).id == first_id and core.resume("latest").id == first_id
    with pytest.raises(UsageError, match="bad conversation id 'x1'"):
        core.resume("x1")
    with pytest.raises(UsageError, match="not available"):
        ChatCore(FakeEngine()).resume(1)
