"""The chat app's answers: the model loading, a message sent, its answer streamed, branches and versions.

:class:`AnswerFlow` is mixed into :class:`chatcli.tui.app.ChatApp`. The model loads in a
thread worker (:mod:`chatcli.tui.loading`) whose progress, result or failure arrive here as
messages; a message sent while it loads goes out when it is ready. An answer streams in the
thread worker of the app's ``stream`` (:class:`~chatcli.tui.stream_controller.StreamController`),
which posts :class:`StreamTick` (at most one UI update per flush interval) and one
:class:`StreamDone`; a branch picked while an answer streams waits for the stop. Picking
an alternative token starts a branch; ``,``/``.`` (and the header's arrows) switch an
answer to a sibling version.

The messages are handled here by name (``on_stream_tick``, ...): Textual finds such
handlers on every class of the app's MRO, while ``@on`` handlers register only on classes
Textual builds (the app itself).
"""

from __future__ import annotations

from chatcli.chat.core import Job
from chatcli.errors import ChatcliError
from chatcli.tui.messages import (
    BranchRequested, EngineFailed, EngineLoaded, EngineNotice, LoadProgress, SiblingRequested, StreamDone, StreamTick,
)  # fmt: skip
from chatcli.tui.widgets.answer import AnswerView
from chatcli.tui.widgets.transcript import LoadingBanner, welcome_content


class AnswerFlow:
    """Loading, sending and streaming (the stream's state lives in ``self.stream``)."""

    # --- model loading ---------------------------------------------------------------------

    def on_load_progress(self, message: LoadProgress) -> None:
        for banner in self.query(LoadingBanner):
            banner.progress(message.stage, message.done, message.total)

    async def on_engine_loaded(self, message: EngineLoaded) -> None:
        self.core.attach_engine(message.engine)
        for banner in self.query(LoadingBanner):
            await banner.remove()
        for w in self.query("#welcome"):
            w.update(welcome_content(self.core.identity.name))
        self.prompt.placeholder = self._placeholder()
        self.refresh_status(state="ready")
        if self._queued:
            text, self._queued = self._queued, None
            await self._send(text)

    async def on_engine_failed(self, message: EngineFailed) -> None:
        for banner in self.query(LoadingBanner):
            await banner.remove()
        self.say(f"could not load the model: {message.error}", "error")
        self.say("commands still work (/history, /save, /quit); restart with another --model to chat", "info")
        self._queued = None
        self.refresh_status(state="no model")

    # --- sending and streaming -------------------------------------------------------------

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
        await self.start_job(job)

    async def start_job(self, job: Job) -> None:
        """Stream ``job``'s answer into its view: a new one, or the one a retry or branch replaces."""
        if self.stream.streaming:  # jobs come from idle-only commands or after a stop; a last guard
            self.notify("an answer is still streaming — Esc stops it", severity="warning", timeout=2)
            return
        node = job.node
        await self.transcript.show_answer(self.core.conv, node, model=self._model_label())
        self.end_comparison()
        self.panel.clear()
        self.refresh_status(state="writing", live_tokens=len(node.steps))
        self.transcript.anchor()
        self.stream.start(job)

    def _model_label(self) -> str:
        return self.core.identity.name if self.core.identity else (self.model_name or "assistant")

    def _stream_view(self) -> AnswerView | None:
        job = self.stream.job
        return self.transcript.view_for(job.node.id) if job is not None else None

    async def on_stream_tick(self, message: StreamTick) -> None:
        view = self._stream_view() if self.stream.flush() is not None else None
        if view is not None:
            await view.sync()
            node = view.node
            if node.steps:
                if self.stream.following:
                    self._show_step(node.id, len(node.steps) - 1, following=True)
                self.status.update_info(live_tokens=len(node.steps))
        self.stream.rendered()  # at most one UI update per interval; later steps go with the next one

    async def on_stream_done(self, message: StreamDone) -> None:
        view = self._stream_view()
        following = self.stream.following
        pending = self.stream.finish()
        if view is not None:
            await view.finish(message.done)
            if view.node.steps and (following or self.panel.node_id != view.node.id):
                self._show_step(view.node.id, len(view.node.steps) - 1, following=False)
        done = message.done
        if done.finish_reason == "error":
            self.say(done.error or "generation failed", "error")
        self.refresh_status(state="ready", tokens_per_s=done.tokens_per_s or self.status.info.tokens_per_s)
        for action in pending:  # e.g. a branch picked while the answer streamed
            await action()

    def on_engine_notice(self, message: EngineNotice) -> None:
        self.say(message.text, "warning" if message.kind in ("warning", "context", "loop") else message.kind)

    # --- branches and versions of an answer ------------------------------------------------

    async def on_branch_requested(self, message: BranchRequested) -> None:
        async def branch() -> None:
            try:
                job = self.core.branch(message.node_id, message.index, message.token_id)
            except ChatcliError as e:
                self.say(e.message, "error")
                return
            await self.start_job(job)
            step = job.node.steps[message.index]
            self.notify(f"branched at token {message.index + 1}: {step.token!r}", timeout=2)
            self.prompt.focus()

        if self.stream.streaming:  # picking an alternative while streaming: stop, then branch
            self.stream.stop_then(branch)
        else:
            await branch()

    async def on_sibling_requested(self, message: SiblingRequested) -> None:
        if self.busy:
            self.notify("wait for the answer to finish (Esc stops it)", severity="warning", timeout=2)
            return
        sibs, i = self.core.conv.siblings(message.node_id)
        if len(sibs) == 1 or not 0 <= i + message.delta < len(sibs):
            self.bell()
            return
        node = self.core.switch_sibling(message.node_id, message.delta)
        view = self.transcript.view_for(message.node_id)
        if view is None:
            await self.redraw()
            return
        await self.transcript.rerender_from(self.core.conv, view, node, model=self._model_label())
        view.focus()
        if node.steps:
            view.move_to(len(node.steps) - 1)
        self.refresh_status()
