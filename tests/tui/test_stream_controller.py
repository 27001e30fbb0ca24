"""The TUI's StreamController without Textual: start, batched ticks, pacing, cancel, refusal, queued actions."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading

from chatcli.chat.core import Job
from chatcli.chat.session import Node
from chatcli.engine.events import Done, Notice, Step
from chatcli.engine.params import SamplingParams
from chatcli.tui.stream_controller import StreamController

WAIT = 5.0


def _step(i: int) -> Step:
    return Step(i, 100 + i, f"t{i}", f"t{i}", 0.5, 0.5, 1.0, ())


def _job(node_id: int = 2, steps: int = 0) -> Job:
    node = Node(node_id, 1, "assistant", status="streaming")
    node.steps = [_step(i) for i in range(steps)]
    return Job("send", node, [], [], SamplingParams())


class Script:
    """A stand-in for ChatCore.run that the test drives: feed(k) appends k steps, end(reason) finishes.

    Like the core it appends each step to the node before yielding it, and like an
    engine it answers a set cancel event with Done("cancelled").
    """

    def __init__(self) -> None:
        self.commands: queue.Queue = queue.Queue()
        self.seen: list[int] = []  # the ids of the nodes it was asked to run

    def feed(self, k: int) -> None:
        self.commands.put(("steps", k))

    def end(self, reason: str | None = "stop") -> None:
        self.commands.put(("end", reason))

    def notice(self, text: str, kind: str) -> None:
        self.commands.put(("notice", (text, kind)))

    def fail(self) -> None:
        self.commands.put(("fail", None))

    def __call__(self, job: Job, cancel: threading.Event):
        self.seen.append(job.node.id)
        node = job.node
        while True:
            try:
                what, arg = self.commands.get(timeout=0.01)
            except queue.Empty:
                if cancel.is_set():
                    yield Done("cancelled", 0, len(node.steps), None, None)
                    return
                continue
            if what == "steps":
                for _ in range(arg):
                    step = _step(len(node.steps))
                    node.steps.append(step)
                    yield step
            elif what == "notice":
                yield Notice(*arg)
            elif what == "fail":
                raise RuntimeError("engine bug")
            elif arg is None:  # a run that ends without a Done
                return
            else:
                yield Done(arg, 0, len(node.steps), None, 12.5)
                return


class Host:
    """The callbacks a UI gives the controller, recorded; ``timers`` are fired by hand."""

    def __init__(self) -> None:
        self.ticks: list[int] = []
        self.notices: list[tuple[str, str]] = []
        self.done: list[tuple[int, Done]] = []
        self.timers: list[tuple[float, object]] = []
        self.threads: list[threading.Thread] = []
        self.ended = threading.Event()
        self.lock = threading.Lock()

    def spawn(self, body):
        thread = threading.Thread(target=body, daemon=True)
        self.threads.append(thread)
        thread.start()
        return thread

    def tick(self, node_id: int) -> None:
        with self.lock:
            self.ticks.append(node_id)

    def on_done(self, node_id: int, done: Done) -> None:
        self.done.append((node_id, done))
        self.ended.set()

    def controller(self, run, **options) -> StreamController:
        return StreamController(
            run, spawn=self.spawn, on_tick=self.tick, on_notice=lambda t, k: self.notices.append((t, k)),
            on_done=self.on_done, schedule=lambda delay, fn: self.timers.append((delay, fn)), **options,
        )  # fmt: skip

    def fire_timer(self) -> None:
        _, fn = self.timers.pop(0)
        fn()

    def wait(self, condition, what: str) -> None:
        deadline = threading.Event()
        for _ in range(int(WAIT / 0.005)):
            if condition():
                return
            deadline.wait(0.005)
        raise AssertionError(f"timed out waiting for {what}")


def _wait_steps(host: Host, job: Job, n: int) -> None:
    host.wait(lambda: len(job.node.steps) >= n, f"{n} steps")


def test_start_runs_the_job_in_the_spawned_thread_and_reports_its_done():
    host, script = Host(), Script()
    ctl = host.controller(script, flush_interval=0.05)
    job = _job(steps=3)
    assert ctl.start(job) and ctl.streaming and ctl.job is job
    assert ctl.handle is host.threads[0] and ctl.flushed == 3  # steps already there (a /continue) count as shown
    script.end("stop")
    assert host.ended.wait(WAIT)
    assert script.seen == [job.node.id] and host.done[0][0] == job.node.id
    assert host.done[0][1].finish_reason == "stop" and host.done[0][1].tokens_per_s == 12.5
    assert ctl.streaming  # until the UI has handled the end
    assert ctl.finish() == [] and not ctl.streaming and ctl.handle is None and ctl.job is None


def test_steps_are_batched_one_tick_at_a_time_and_flushed_after_the_interval():
    host, script = Host(), Script()
    ctl = host.controller(script, flush_interval=0.05)
    job = _job()
    ctl.start(job)
    script.feed(5)
    _wait_steps(host, job, 5)
    host.wait(lambda: host.ticks, "the first tick")
    assert host.ticks == [job.node.id]  # five steps, one tick: it stays pending until the UI is done

    assert ctl.flush() == 5 and ctl.flushed == 5  # the UI takes all of them at once
    script.feed(4)
    _wait_steps(host, job, 9)
    assert host.ticks == [job.node.id]  # still pending: the UI has not rendered yet
    ctl.rendered()
    delay, _ = host.timers[0]
    assert delay >= 0.05  # at most one UI update per flush_interval
    host.fire_timer()  # the interval is over and four steps came meanwhile: they go out now
    assert host.ticks == [job.node.id, job.node.id]
    assert ctl.flush() == 9
    ctl.rendered()
    host.fire_timer()  # nothing new: no tick, and the next step ticks at once
    assert len(host.ticks) == 2
    script.feed(1)
    host.wait(lambda: len(host.ticks) == 3, "a tick for the next step")
    script.end("stop")
    assert host.ended.wait(WAIT)


def test_cancel_sets_the_event_and_the_answer_ends_cancelled():
    host, script = Host(), Script()
    ctl = host.controller(script)
    job = _job()
    assert not ctl.cancel() and not ctl.stopping  # nothing streams yet
    ctl.start(job)
    script.feed(2)
    _wait_steps(host, job, 2)
    assert ctl.cancel() and ctl.stopping
    assert host.ended.wait(WAIT)
    assert host.done[0][1].finish_reason == "cancelled" and host.done[0][1].completion_tokens == 2
    ctl.finish()
    assert not ctl.stopping and not ctl.cancel()


def test_a_run_that_ends_without_a_done_counts_as_cancelled():
    host, script = Host(), Script()
    ctl = host.controller(script)
    job = _job()
    ctl.start(job)
    script.feed(1)
    script.end(None)
    assert host.ended.wait(WAIT)
    done = host.done[0][1]
    assert done.finish_reason == "cancelled" and done.completion_tokens == 1


def test_an_engine_error_ends_the_answer_with_an_error_done():
    host, script = Host(), Script()
    ctl = host.controller(script)
    job = _job()
    ctl.start(job)
    script.feed(1)
    script.fail()
    assert host.ended.wait(WAIT)
    done = host.done[0][1]
    assert done.finish_reason == "error" and done.error == "RuntimeError: engine bug"
    assert job.node.status == "error" and job.node.meta["error"] == "RuntimeError: engine bug"


def test_notices_are_passed_on():
    host, script = Host(), Script()
    ctl = host.controller(script)
    ctl.start(_job())
    script.notice("dropped 2 turns to fit", "context")
    script.end("stop")
    assert host.ended.wait(WAIT)
    assert host.notices == [("dropped 2 turns to fit", "context")]


def test_a_second_start_while_streaming_is_refused_and_queued_actions_run_after_the_end():
    host, script = Host(), Script()
    ctl = host.controller(script)
    first, second = _job(2), _job(4)
    assert ctl.start(first)
    assert not ctl.start(second)  # refused: nothing spawned for it
    assert len(host.threads) == 1 and ctl.job is first

    branched: list[str] = []
    ctl.stop_then(lambda: branched.append("branch"))  # e.g. an alternative picked while streaming
    assert ctl.stopping
    assert host.ended.wait(WAIT)
    assert host.done[0][1].finish_reason == "cancelled"
    pending = ctl.finish()
    assert len(pending) == 1 and branched == []
    pending[0]()
    assert branched == ["branch"] and ctl.finish() == []  # each queued action runs once

    host.ended.clear()
    assert ctl.start(second)  # the next answer may start now
    script.end("stop")
    assert host.ended.wait(WAIT) and script.seen == [2, 4]


def test_shutdown_stops_the_answer_and_waits_for_the_worker():
    host, script = Host(), Script()
    ctl = host.controller(script)
    ctl.shutdown(0.1)  # nothing streams: returns at once
    ctl.start(_job())
    ctl.shutdown(WAIT)
    assert not host.threads[0].is_alive()  # the worker has returned (its answer saved by the core)


def test_the_interval_grows_while_the_ui_thread_is_busy_and_shrinks_back():
    host, script = Host(), Script()
    clock = {"cpu": 0.0, "wall": 0.0}
    ctl = host.controller(script, flush_interval=0.05, cpu_clock=lambda: clock["cpu"], wall_clock=lambda: clock["wall"])
    ctl.start(_job())
    clock["cpu"] += 0.5  # the UI thread used half of the last second
    clock["wall"] += 1.0
    assert abs(ctl.next_interval() - 0.075) < 1e-9
    clock["cpu"] += 0.9
    clock["wall"] += 1.0
    assert abs(ctl.next_interval() - 0.1125) < 1e-9
    for _ in range(40):  # idle UI: back to flush_interval, never below it
        clock["wall"] += 1.0
        interval = ctl.next_interval()
    assert interval == 0.05
    for _ in range(40):  # always busy: capped at one second
        clock["cpu"] += 1.0
        clock["wall"] += 1.0
        interval = ctl.next_interval()
    assert interval == 1.0
    ctl.cancel()
    assert host.ended.wait(WAIT)


def test_the_panel_follows_the_live_step_until_another_token_is_selected():
    host, script = Host(), Script()
    ctl = host.controller(script)
    job = _job(steps=4)
    ctl.start(job)
    assert ctl.following
    assert not ctl.token_selected(job.node.id, 1)  # an earlier token of the streaming answer
    assert not ctl.following
    ctl.follow()  # inspection ended: the live step again
    assert ctl.following
    assert ctl.token_selected(job.node.id, 3)  # its newest step: still following
    assert not ctl.token_selected(99, 3)  # another answer
    ctl.cancel()
    assert host.ended.wait(WAIT)
    ctl.finish()
    ctl.follow()  # nothing streams: nothing to follow
    assert not ctl.following


def test_the_controller_needs_no_textual():
    code = "import sys, chatcli.tui.stream_controller; print(any(m.split('.')[0] == 'textual' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
