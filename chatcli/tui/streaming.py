"""Sending a message and streaming the answer into the chat app.

Mixed into :class:`chatcli.tui.app.ChatApp`. Every answer streams in a thread
worker that iterates :meth:`chatcli.chat.core.ChatCore.run`; the worker only
appends to the conversation and posts a :class:`StreamTick` when none is
pending, and the UI takes every new step at once, then waits an adaptive
interval (``flush_interval`` at least) before the next tick.
"""

from __future__ import annotations

import threading
import time

from textual import work

from chatcli.chat.core import Job
from chatcli.engine.events import Done, Notice, Step
from chatcli.errors import ChatcliError
from chatcli.tui.widgets.answer import AnswerView
from chatcli.tui.messages import EngineNotice, StreamDone, StreamTick
from chatcli.tui.widgets.transcript import LoadingBanner, UserMessage


class StreamingMixin:
    """_send / _start_job / the _generate worker / tick pacing / on_stream_done."""

    _cancel: threading.Event | None
    _stream_view: AnswerView | None

    async def _send(self, text: str) -> None:
        if self.busy:
            self.prompt.load_text(text)
            self.notify("an answer is still streaming — Esc stops it", severity="warning", timeout=2)
            return
        if self.core.engine is None:
            if self.query(LoadingBanner):
                self._queued = text
                self.say("the model is still loading; your message goes out as soon as it is ready", "info")
            else:
                self.say("no model is loaded; restart chatcli with a working --model", "error")
            return
        try:
            job = self.core.send(text)
        except ChatcliError as e:
            self.say(e.message, "error")
            return
        await self._start_job(job)

    async def _start_job(self, job: Job) -> None:
        conv = self.core.conv
        node = job.node
        transcript = self.transcript
        view = transcript.view_for(node.id)
        if view is None:
            shown = next((a for a in transcript.answers() if a.node.parent == node.parent), None)
            if shown is not None:  # a retry or a branch takes the place of the answer on screen
                await transcript.rerender_from(conv, shown, node, model=self._model_label(), tint=self.tint)
                view = shown
            else:
                parent = conv.nodes.get(node.parent) if node.parent is not None else None
                if parent is not None and not any(isinstance(w, UserMessage) and w.node.id == parent.id for w in transcript.children):
                    await transcript.add_user(parent)
                view = await transcript.add_answer(conv, node, model=self._model_label(), tint=self.tint)
        else:
            view.reset(node, view.sibling_pos)
        view._update_header()
        self.end_comparison()
        self._stream_view = view
        self._stream_job = job
        self._following = True
        self._cancel = threading.Event()
        self.panel.clear()
        self._refresh_status(state="writing", live_tokens=len(node.steps))
        transcript.anchor()
        self._flushed = len(node.steps)
        self._tick_pending = False
        self._interval = self.flush_interval
        self._ui_clock = (time.thread_time(), time.monotonic())
        self._gen_finished.clear()
        self._gen_worker = self._generate(job, self._cancel)

    def _model_label(self) -> str:
        return self.core.identity.name if self.core.identity else (self.model_name or "assistant")

    @work(thread=True, group="generate", exit_on_error=False)
    def _generate(self, job: Job, cancel: threading.Event) -> None:
        done: Done | None = None
        try:
            for event in self.core.run(job, cancel):
                if isinstance(event, Step):
                    if not self._tick_pending:  # one tick in flight at most: the UI takes all new steps at once
                        self._tick_pending = True
                        self.post_message(StreamTick(job.node.id))
                elif isinstance(event, Notice):
                    self.post_message(EngineNotice(event.message, event.kind))
                elif isinstance(event, Done):
                    done = event
        except Exception as e:  # an engine bug: report it, keep the app and the conversation alive
            job.node.status = "error"
            job.node.meta["error"] = f"{type(e).__name__}: {e}"
            done = Done("error", 0, len(job.node.steps), None, None, error=job.node.meta["error"])
        finally:
            self._gen_finished.set()  # the answer is saved (ChatCore.run persists on the way out)
        self.post_message(StreamDone(job.node.id, done or Done("cancelled", 0, len(job.node.steps), None, None)))

    async def on_stream_tick(self, message: StreamTick) -> None:
        await self._flush_stream()
        # At most one UI update per interval; steps that arrive meanwhile go with the next one.
        self.set_timer(self._next_interval(), self._tick_done)

    def _next_interval(self) -> float:
        """The pause before the next UI update: ``flush_interval``, longer while the UI thread is busy.

        Layout and rendering of a long answer cost more with every token; the UI
        thread also competes with the engine for the GIL. Keeping the UI thread's
        CPU share under ~30% keeps both the model and the keyboard fast.
        """
        cpu, wall = time.thread_time(), time.monotonic()
        last_cpu, last_wall = self._ui_clock
        self._ui_clock = (cpu, wall)
        if wall > last_wall:
            share = (cpu - last_cpu) / (wall - last_wall)
            if share > 0.3:
                self._interval = min(1.0, self._interval * 1.5)
            elif share < 0.15:
                self._interval = max(self.flush_interval, self._interval / 1.25)
        return self._interval

    def _tick_done(self) -> None:
        self._tick_pending = False
        view = self._stream_view
        if view is not None and len(view.node.steps) > self._flushed:
            self._tick_pending = True
            self.post_message(StreamTick(view.node.id))

    async def _flush_stream(self) -> None:
        view = self._stream_view
        if view is None:
            return
        self._flushed = len(view.node.steps)
        if not view.is_attached:  # the app is closing
            return
        await view.sync()
        node = view.node
        if node.steps:
            if self._following:
                self._show_step(node.id, len(node.steps) - 1, following=True)
            self.status.update_info(live_tokens=len(node.steps))

    async def on_stream_done(self, message: StreamDone) -> None:
        view = self._stream_view
        self._gen_worker = None
        self._cancel = None
        self._stream_view = None
        self._stream_job = None
        if view is not None:
            await view.finish(message.done)
            if view.node.steps and (self._following or self.panel.node_id != view.node.id):
                self._show_step(view.node.id, len(view.node.steps) - 1, following=False)
        done = message.done
        if done.finish_reason == "error":
            self.say(done.error or "generation failed", "error")
        self._refresh_status(state="ready", tokens_per_s=done.tokens_per_s or self.status.info.tokens_per_s)
        pending, self._after_stream = self._after_stream, []
        for action in pending:
            await action()

    def on_engine_notice(self, message: EngineNotice) -> None:
        self.say(message.text, "warning" if message.kind in ("warning", "context") else message.kind)
