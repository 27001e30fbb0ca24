"""The tour's state machine: starting and resuming, moving between chapters, notes, saving, and the chat's events."""

from __future__ import annotations

import threading

import pytest

from chatcli.chat.core import ChatCore
from chatcli.engine.params import SamplingParams
from chatcli.errors import UsageError
from chatcli.tour.checks import COMMAND, STEP, TourEvent
from chatcli.tour.guide import Tour
from tests.fake_engine import FakeEngine


def test_events_are_ignored_until_the_tour_starts(tmp_path):
    tour = Tour(tmp_path / "tour.json")
    tour.observe(TourEvent(STEP, entropy=0.1))
    assert tour.view().met == frozenset() and not (tmp_path / "tour.json").exists()
    tour.start()
    tour.observe(TourEvent(STEP, entropy=0.1))
    assert tour.view().met == {"near"}


def test_progress_resumes_mid_chapter_across_runs(tmp_path):
    path = tmp_path / "tour.json"
    first = Tour(path)
    first.start(4)
    first.observe(TourEvent(COMMAND, name="raw"))
    second = Tour(path)  # a new run
    assert second.start().number == 4
    assert second.view().met == {"raw"} and not second.view().chapter_done


def test_next_needs_the_chapter_done_but_a_number_skips(tmp_path):
    tour = Tour(None)
    tour.start(1)
    with pytest.raises(UsageError, match=r"chapter 1 is not done yet .*near-certain.*/tour 2"):
        tour.next()
    tour.observe(TourEvent(STEP, entropy=0.2))
    tour.observe(TourEvent(STEP, entropy=5.0))
    assert tour.view().chapter_done
    assert tour.next().number == 2
    assert tour.back().number == 1
    with pytest.raises(UsageError, match="first chapter"):
        tour.back()
    assert tour.start(9).number == 9
    with pytest.raises(UsageError, match="last one"):
        tour.next()
    with pytest.raises(UsageError, match="chapters 1 to 9"):
        tour.start(10)


def test_notes_say_each_goal_and_the_chapter_once():
    tour = Tour(None)
    tour.start(1)
    tour.observe(TourEvent(STEP, entropy=0.2))
    tour.observe(TourEvent(STEP, entropy=0.3))  # the same goal again: no note
    tour.observe(TourEvent(STEP, entropy=4.0))
    notes = tour.take_notes()
    assert [n.text for n in notes][:2] == ["tour ✓ a near-certain step (≤ 0.5 bits)", "tour ✓ a wide-open step (≥ 3 bits)"]
    assert notes[2].kind == "done" and "/tour next opens chapter 2" in notes[2].text
    assert tour.take_notes() == []


def test_a_broken_progress_file_is_one_note_and_a_fresh_start(tmp_path):
    path = tmp_path / "tour.json"
    path.write_text("{oops")
    tour = Tour(path)
    assert tour.start().number == 1
    [note] = tour.take_notes()
    assert "broken" in note.text and note.kind == "warning"
    assert '"current": 1' in path.read_text()  # written again, whole


def test_a_progress_file_that_cannot_be_written_is_said_once(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    tour = Tour(blocker / "tour.json")  # its folder is a file
    tour.start(1)
    tour.observe(TourEvent(STEP, entropy=0.2))
    notes = [n.text for n in tour.take_notes()]
    assert sum("could not be saved" in n for n in notes) == 1
    assert tour.view().met == {"near"}  # kept for the session


def test_subscribers_hear_every_change():
    tour = Tour(None)
    calls = []
    tour.subscribe(lambda: calls.append(1))
    tour.start(1)
    tour.observe(TourEvent(COMMAND, name="help"))  # nothing met: no call
    tour.observe(TourEvent(STEP, entropy=0.1))
    tour.stop()
    assert len(calls) == 3


def test_reset_forgets_everything(tmp_path):
    tour = Tour(tmp_path / "tour.json")
    tour.start(3)
    tour.reset()
    assert Tour(tmp_path / "tour.json").view().chapter.number == 1


def test_the_chat_cores_events_reach_the_tour():
    tour = Tour(None)
    tour.start(4)
    core = ChatCore(FakeEngine(length=6), params=SamplingParams(temperature=0, max_tokens=8), listeners=(tour.listener,))
    for text in ("one", "two"):
        for _ in core.run(core.send(text)):
            pass
    assert tour.view().met == {"turns"}


def test_a_front_end_that_prints_every_token_sees_each_answers_surest_and_least_sure_steps():
    tour = Tour(None, sees_answers=True)
    tour.start(1)
    core = ChatCore(FakeEngine(length=12), params=SamplingParams(temperature=0, max_tokens=12), listeners=(tour.listener,))
    for _ in core.run(core.send("hello")):
        pass
    entropies = [s.entropy for s in core.conv.leaf.steps]
    expected = {"near"} if min(entropies) <= 0.5 else set()
    expected |= {"wide"} if max(entropies) >= 3 else set()
    assert tour.view().met == expected and expected  # the fake engine has both kinds of step


def test_events_from_several_threads_are_all_counted(tmp_path):
    tour = Tour(tmp_path / "tour.json")
    tour.start(8)
    names = ["lora", "compare", "lora-layers", "load-lora"]
    threads = [threading.Thread(target=tour.command_ran, args=(n, {})) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert tour.view().chapter_done
    assert Tour(tmp_path / "tour.json").view().done == {8}
