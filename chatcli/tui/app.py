"""The Textual chat app: ``make_app(engine_factory, ...)`` is shared by ``chatcli chat`` and the tests.

Threads: the model loads in a thread worker (progress posted as messages) and
every answer streams in a thread worker that iterates
:meth:`chatcli.chat_core.ChatCore.run`; the worker only appends to the
conversation and posts a :class:`StreamTick` only when none is pending, and
the UI takes every new step at once and then waits ``flush_interval`` (50 ms)
before the next tick: a fast model never floods the message queue or makes
rendering the bottleneck, and a slow UI only sees bigger batches. Esc (or Ctrl+C) sets the stream's cancel event; the
engine ends with ``Done("cancelled")`` and the partial answer stays, marked stopped.

The app implements :class:`chatcli.commands.CommandContext`, so slash commands,
the command palette and the plain REPL run the same command functions.
"""

from __future__ import annotations

import os
import shlex
import signal
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from rich.console import RenderableType
from textual import on, work
from textual.actions import SkipAction
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer

from chatcli.chat_core import ChatCore, EngineFactory, Job
from chatcli.commands import REGISTRY, Registry, execute, is_command, message_text
from chatcli.engine.events import Done, Notice, Step
from chatcli.engine.params import SamplingParams
from chatcli.errors import ChatcliError
from chatcli.store import Store
from chatcli.tui.answer import AnswerView
from chatcli.tui.compare_view import comparison_note
from chatcli.tui.messages import (
    BranchRequested, EngineFailed, EngineLoaded, EngineNotice, LoadProgress, SiblingRequested, StreamDone, StreamTick,
    TokenSelected,
)
from chatcli.tui.probs import AltList, ProbabilityPanel
from chatcli.tui.prompt import ChatInput, CommandHints
from chatcli.tui.status import StatusBar
from chatcli.tui.tokens import TINTS
from chatcli.tui.transcript import LoadingBanner, Transcript, UserMessage, welcome_content

TINT_HELP = {
    "off": "answers as Markdown",
    "model_prob": "tokens tinted by how unlikely the model found them",
    "entropy": "tokens tinted by how open the choice was (entropy)",
}


class ChatApp(App):
    CSS_PATH = "chatcli.tcss"
    TITLE = "chatcli"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (96, "-wide")]
    BINDINGS = [
        Binding("escape", "escape", "Stop", priority=True, id="stop"),
        Binding("ctrl+c", "interrupt", "Stop", show=False, priority=True, id="interrupt"),
        Binding("ctrl+up,alt+up", "inspect", "Inspect", id="inspect", key_display="^↑"),
        Binding("f2", "cycle_tint", "Tint", id="tint"),
        Binding("f3", "toggle_panel", "Panel", id="panel"),
        Binding("f4", "toggle_compare", "Sampled", id="compare"),
        # F8 runs what a plugin's status item offers (/finetune load); F6/F7 select text in the input.
        Binding("f8", "status_action", "Offer", show=False, id="status_action"),
        Binding("ctrl+q", "quit", "Quit", priority=True, id="quit"),
    ]

    def __init__(
        self,
        engine_factory: EngineFactory,
        *,
        model_name: str | None = None,
        params: SamplingParams | None = None,
        system: str | None = None,
        store: Store | None = None,
        store_warning: str | None = None,
        resume: int | str | None = None,
        tint: str = "off",
        flush_interval: float = 0.05,
        registry: Registry = REGISTRY,
        notes: Iterable[str] = (),
    ) -> None:
        super().__init__()
        self.engine_factory = engine_factory
        self.model_name = model_name
        self.registry = registry
        self.store_warning = store_warning
        self.resume_id = resume
        self.tint = tint if tint in TINTS else "off"
        self.flush_interval = flush_interval
        self._notices: list[tuple[str, str]] = [(n, "warning") for n in notes]
        self.core = ChatCore(None, store=store, params=params, system=system, on_notice=self._notice_from_core)
        self._cancel: threading.Event | None = None
        self._gen_finished = threading.Event()
        self._gen_worker = None
        self._stream_view: AnswerView | None = None
        self._stream_job: Job | None = None
        self._following = True
        self._after_stream: list = []
        self._queued: str | None = None
        self._inspected: AnswerView | None = None
        self._compared: AnswerView | None = None  # the answer /compare tints by KL
        self._load_started = 0.0
        self._tick_pending = False  # a StreamTick is posted and not yet handled (set by both threads)
        self._flushed = 0  # steps of the streaming answer already rendered
        self._interval = flush_interval  # the current pause between UI updates (adaptive)
        self._ui_clock = (0.0, 0.0)  # (UI thread CPU time, wall time) at the last update
        self._old_sighup = None

    # --- layout ----------------------------------------------------------------------------

    def compose(self):
        with Horizontal(id="main"):
            yield Transcript(id="transcript")
            yield ProbabilityPanel()
        yield CommandHints()
        yield ChatInput(self.registry, self._initial_history(), placeholder=self._placeholder())
        yield StatusBar()
        yield Footer(compact=True)

    @property
    def transcript(self) -> Transcript:
        return self.query_one(Transcript)

    @property
    def panel(self) -> ProbabilityPanel:
        return self.query_one(ProbabilityPanel)

    @property
    def prompt(self) -> ChatInput:
        return self.query_one(ChatInput)

    @property
    def status(self) -> StatusBar:
        return self.query_one(StatusBar)

    def _placeholder(self) -> str:
        who = self.core.identity.name if self.core.engine is not None else (self.model_name or "the model")
        return f"Message {who} — Enter sends · Ctrl+J new line · / commands"

    def _initial_history(self) -> list[str]:
        if self.core.store is None:
            return []
        try:
            return self.core.store.recent_inputs(200)
        except Exception:
            return []

    async def on_mount(self) -> None:
        self.query_one(CommandHints).display = False
        if self.resume_id is not None:
            try:
                self.core.resume(self.resume_id)
            except ChatcliError as e:
                self._notices.append((e.message, "error"))
        await self._redraw()
        if self.store_warning:
            self.say(self.store_warning, "warning")
        for message, kind in self._notices:
            self.say(message, kind)
        self._notices.clear()
        await self.transcript.mount(LoadingBanner(self.model_name or "model"))
        self._refresh_status(state="loading")
        self.prompt.focus()
        self._load_started = time.monotonic()
        self._load_engine()
        self._install_sighup()

    # --- model loading ---------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def _load_engine(self) -> None:
        last = [0.0]

        def progress(stage: str, done: int, total: int | None) -> None:
            now = time.monotonic()
            if now - last[0] >= 0.05 or (total is not None and done >= total):
                last[0] = now
                self.post_message(LoadProgress(stage, done, total))

        try:
            engine = self.engine_factory(progress)
        except ChatcliError as e:
            self.post_message(EngineFailed(e.message))
            return
        except Exception as e:  # a bug in a loader must not take the app down
            self.post_message(EngineFailed(f"{type(e).__name__}: {e}"))
            return
        self.post_message(EngineLoaded(engine))

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
        self._refresh_status(state="ready")
        if self._queued:
            text, self._queued = self._queued, None
            await self._send(text)

    async def on_engine_failed(self, message: EngineFailed) -> None:
        for banner in self.query(LoadingBanner):
            await banner.remove()
        self.say(f"could not load the model: {message.error}", "error")
        self.say("commands still work (/history, /save, /quit); restart with another --model to chat", "info")
        self._queued = None
        self._refresh_status(state="no model")

    # --- the CommandContext surface ---------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._gen_worker is not None

    def say(self, message: RenderableType, kind: str = "info") -> None:
        self.transcript.add_note(message, kind)
        if kind == "error":
            self.bell()

    def run_job(self, job: Job) -> None:
        self.call_later(self._start_job, job)

    def conversation_changed(self) -> None:
        self.call_later(self._redraw)

    def set_tint(self, mode: str) -> None:
        self.end_comparison()
        self.tint = mode
        for view in self.transcript.answers():
            view.set_tint(mode)
        self._refresh_status()
        self.notify(f"tint: {mode} — {TINT_HELP[mode]}", timeout=2)

    def quit(self) -> None:
        self.call_later(self.action_quit)

    def show_comparison(self, node, comparison) -> None:
        """Called by /compare: tint the answer by per-token KL; its tokens show base vs adapter in the panel.

        The same comparison again (nothing changed since) switches it off, like Esc or F2.
        """
        view = self.transcript.view_for(node.id)
        shown = self._compared
        previous = shown.comparison if shown is not None else None
        self.end_comparison()
        if view is None or view.node is not node or len(comparison.steps) != len(node.steps):
            # not on screen (another branch is shown): the transcript gets the printed copy
            from chatcli.lora_commands import comparison_view

            self.say(comparison_view(comparison), "result")
            return
        if shown is view and previous == comparison:
            self.notify("comparison off: normal tinting", timeout=2)
            return
        view.set_comparison(comparison)
        self._compared = view
        self.say(comparison_note(comparison), "result")
        self.panel.display = True  # the side-by-side distributions are the point
        if comparison.steps:
            view.focus()
            view.move_to(comparison.max_step.index)

    def pick_adapter(self) -> None:
        """Called by /load-lora with no argument: choose from the adapters found by name."""
        from chatcli.tui.adapter_picker import AdapterPicker, find_adapters

        entries = find_adapters()
        if not entries:
            self.say("no adapters in ./adapters, the demo adapters or the user adapter dir: /load-lora PATH loads one", "info")
            return
        engine = self.core.engine
        mgr = getattr(engine, "adapters", None)
        if mgr is None and getattr(engine, "model", None) is not None:
            from chatcli.engine.adapters import AdapterManager

            mgr = getattr(engine.model, AdapterManager._ATTR, None)
        loaded = list(mgr.names) if mgr is not None else []

        def chosen(path) -> None:
            if path is not None:  # /load-lora splits its argument like a shell (not on Windows)
                execute(self, "/load-lora " + (shlex.quote(str(path)) if os.name != "nt" else f'"{path}"'))
                self._refresh_status()

        self.push_screen(AdapterPicker(entries, loaded), chosen)

    def end_comparison(self) -> bool:
        """Back to normal tinting (Esc, F2, /tint, a new answer); False when no comparison was shown."""
        view, self._compared = self._compared, None
        if view is None or view.comparison is None:  # none, or its view moved to a sibling since
            return False
        if view.is_attached:
            view.set_comparison(None)
            if self.panel.node_id == view.node.id and view.cursor is not None:
                self._show_step(view.node.id, view.cursor, following=False)
        return True

    def adapters_changed(self) -> None:
        """Called by the adapter commands: the status bar shows the active adapters."""
        self._refresh_status()

    def _notice_from_core(self, message: str, kind: str) -> None:
        # May run in the generation worker thread; post_message is the thread-safe way in.
        self.post_message(EngineNotice(message, kind))

    # --- sending and streaming -------------------------------------------------------------

    @on(ChatInput.Submitted)
    async def on_submitted(self, event: ChatInput.Submitted) -> None:
        text = event.text
        self.query_one(CommandHints).display = False
        if is_command(text):
            execute(self, text.strip())
            self._refresh_status()
            return
        await self._send(message_text(text))

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

    # --- the probability view --------------------------------------------------------------

    def _show_step(self, node_id: int, index: int, *, following: bool) -> None:
        node = self.core.conv.nodes.get(node_id)
        if node is None or not 0 <= index < len(node.steps):
            return
        compared = self._compared
        if compared is not None and compared.node is node and compared.comparison is not None:
            c = compared.comparison
            self.panel.show_shift(node.steps[index], c.steps[index], adapters=c.adapters, node_id=node_id, index=index, total=len(node.steps))
            return
        self.panel.show(node.steps[index], node_id=node_id, index=index, total=len(node.steps), following=following)

    def on_token_selected(self, message: TokenSelected) -> None:
        streaming = self._stream_view is not None and self._stream_view.node.id == message.node_id
        self._following = streaming and message.index >= len(self._stream_view.node.steps) - 1
        self._show_step(message.node_id, message.index, following=self._following)

    async def on_branch_requested(self, message: BranchRequested) -> None:
        async def branch() -> None:
            try:
                job = self.core.branch(message.node_id, message.index, message.token_id)
            except ChatcliError as e:
                self.say(e.message, "error")
                return
            await self._start_job(job)
            step = job.node.steps[message.index]
            self.notify(f"branched at token {message.index + 1}: {step.token!r}", timeout=2)
            self.prompt.focus()

        if self.busy:  # picking an alternative while streaming: stop, then branch
            self._after_stream.append(branch)
            self._cancel.set()
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
            await self._redraw()
            return
        await self.transcript.rerender_from(self.core.conv, view, node, model=self._model_label(), tint=self.tint)
        view.focus()
        if node.steps:
            view.move_to(len(node.steps) - 1)
        self._refresh_status()

    def set_inspected(self, view: AnswerView) -> None:
        if self._inspected is not None and self._inspected is not view and self._inspected.is_attached:
            self._inspected.set_inspecting(False)
        self._inspected = view

    def clear_inspected(self) -> None:
        if self._inspected is not None and self._inspected.is_attached:
            self._inspected.set_inspecting(False)
        self._inspected = None
        if self._stream_view is not None:
            self._following = True

    def focus_alternatives(self) -> None:
        alts = self.query_one(AltList)
        if self.panel.display and alts.display and alts.option_count:
            alts.focus()
            if alts.highlighted is None:
                alts.highlighted = 0

    def focus_inspected(self) -> None:
        if self._inspected is not None and self._inspected.is_attached:
            self._inspected.focus()
        else:
            self.prompt.focus()

    # --- actions ---------------------------------------------------------------------------

    def action_escape(self) -> None:
        if self.screen is not self.screen_stack[0]:
            raise SkipAction()  # a modal (the command palette) closes itself
        if self._cancel is not None and not self._cancel.is_set():
            self.action_stop()
        elif isinstance(self.focused, ChatInput) and self.query_one(CommandHints).display:
            self.query_one(CommandHints).display = False
        elif self.end_comparison():
            pass
        elif not isinstance(self.focused, ChatInput):
            self.prompt.focus()
        elif self.query_one(CommandHints).display:
            self.query_one(CommandHints).display = False
        else:
            raise SkipAction()

    def action_stop(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self._refresh_status(state="stopping")

    def action_interrupt(self) -> None:
        if self._cancel is not None and not self._cancel.is_set():
            self.action_stop()
            return
        raise SkipAction()  # copy in the prompt, or the "Ctrl+Q quits" hint

    def action_focus_input(self) -> None:
        self.prompt.focus()

    def action_inspect(self) -> None:
        answers = self.transcript.answers()
        if not answers:
            self.notify("no answer to inspect yet", timeout=2)
            return
        target = answers[-1]
        if isinstance(self.focused, AnswerView) and self.focused in answers:
            idx = answers.index(self.focused)
            target = answers[max(0, idx - 1)]
        target.focus()
        if target.node.steps:
            target.move_to(target.cursor if target.cursor is not None else len(target.node.steps) - 1)

    def action_focus_answer(self, delta: int) -> None:
        answers = self.transcript.answers()
        if not isinstance(self.focused, AnswerView) or self.focused not in answers:
            return
        idx = answers.index(self.focused) + delta
        if idx >= len(answers):
            self.prompt.focus()
        elif idx >= 0:
            answers[idx].focus()
            answers[idx].scroll_visible(animate=False)

    def action_cycle_tint(self) -> None:
        if self.end_comparison():  # F2 first returns a compared answer to the normal tint
            self._refresh_status()
            return
        self.set_tint(TINTS[(TINTS.index(self.tint) + 1) % len(TINTS)])

    def action_toggle_panel(self) -> None:
        self.panel.display = not self.panel.display

    def action_toggle_compare(self) -> None:
        self.panel.set_compare(not self.panel.compare)
        if not self.panel.display:
            self.panel.display = True

    def action_status_action(self) -> None:
        """F8: run the slash command a plugin's status item offers (e.g. /finetune load)."""
        action = self.status.info.action
        if not action:
            self.notify("nothing to run: F8 runs what the status bar offers (e.g. /finetune load when a run is done)", timeout=3)
            return
        execute(self, action)
        self._refresh_status()
        self.status.poll_plugins()

    async def action_quit(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
        worker = self._gen_worker
        if worker is not None:
            try:
                await worker.wait()
            except Exception:
                pass
        self.exit()

    # --- prompt hints ----------------------------------------------------------------------

    @on(ChatInput.Changed)
    def _on_prompt_changed(self, event: ChatInput.Changed) -> None:
        self.query_one(CommandHints).show_for(self.prompt.completions())

    def on_descendant_focus(self, event) -> None:
        if isinstance(event.widget, ChatInput):
            self.clear_inspected()

    # --- the command palette ---------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for c in self.registry.commands():
            yield SystemCommand(c.usage, c.summary, self._palette_callback(c.name, bool(c.args)))
        yield SystemCommand("Tint tokens by certainty", "cycle off / model_prob / entropy (F2)", self.action_cycle_tint)
        yield SystemCommand("Toggle the probability panel", "show or hide the next-token distribution (F3)", self.action_toggle_panel)
        yield SystemCommand("Show the sampled distribution", "raw model vs what was sampled from (F4)", self.action_toggle_compare)
        from chatcli import plugins

        manager = plugins.loaded_manager()
        for ext in manager.tui_extensions("screen") if manager is not None else ():
            yield SystemCommand(ext.title, f"from the {ext.plugin} plugin", self._plugin_screen_callback(ext))

    def _plugin_screen_callback(self, ext):
        def run() -> None:
            try:
                self.push_screen(ext.factory(self))
            except ChatcliError as e:
                self.say(e.message, "error")

        return run

    def _palette_callback(self, name: str, has_args: bool):
        def run() -> None:
            if has_args:
                self.prompt.load_text(f"/{name} ")
                self.prompt.move_cursor(self.prompt.document.end)
                self.prompt.focus()
            else:
                execute(self, f"/{name}")
                self._refresh_status()

        return run

    # --- helpers ---------------------------------------------------------------------------

    async def _redraw(self) -> None:
        await self.transcript.show_conversation(
            self.core.conv, model=self._model_label(), tint=self.tint,
            welcome=welcome_content(self.core.identity.name if self.core.identity else self.model_name),
        )
        self._compared = None  # its view is gone
        self.panel.clear()
        self._inspected = None
        self._refresh_status()

    def _refresh_status(self, **changes) -> None:
        try:
            usage = self.core.context_usage()
        except Exception:
            usage = None
        self.status.update_info(
            identity=self.core.identity, model=self.model_name or "", params=self.core.conv.params, context=usage,
            conv_id=self.core.conv.id, saving=self.core.store is not None, tint=self.tint,
            adapters=self._adapters_text(), **changes,
        )

    def _adapters_text(self) -> str:
        if self.core.engine is None:
            return ""
        try:
            from chatcli.lora_commands import status_text

            return status_text(self.core.engine)
        except Exception:  # a fake or remote engine without adapters
            return ""

    def _install_sighup(self) -> None:
        # A closing terminal sends SIGHUP. There is no screen left to shut down gracefully
        # (Textual's writer can block on the dead terminal), so: stop the answer, let the
        # worker save its tail, and leave. Everything else is already in the store.
        if self.is_headless or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
            return

        def on_hup(signum, frame) -> None:
            if self._cancel is not None:
                self._cancel.set()
                self._gen_finished.wait(3.0)
            os._exit(128 + signum)

        try:
            self._old_sighup = signal.signal(signal.SIGHUP, on_hup)
        except ValueError:
            pass

    def on_unmount(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
        if self._old_sighup is not None:
            signal.signal(signal.SIGHUP, self._old_sighup)


def make_app(engine_factory: EngineFactory, **options) -> ChatApp:
    """The chat app on the engine ``engine_factory(progress)`` returns (loaded in a worker thread).

    Options: ``model_name``, ``params`` (SamplingParams), ``system``, ``store`` (a
    :class:`~chatcli.store.Store` or None for no history), ``store_warning``,
    ``resume`` (an id, or "latest"), ``tint`` ("off" | "model_prob" | "entropy"),
    ``flush_interval`` (seconds between UI updates while streaming), ``registry`` (slash
    commands, plugins' included), ``notes`` (warnings to show at start, e.g. plugin problems).
    """
    return ChatApp(engine_factory, **options)


CSS_FILE = Path(__file__).with_name("chatcli.tcss")
