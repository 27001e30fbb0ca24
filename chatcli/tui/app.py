"""The Textual chat app: ``make_app(engine_factory, ...)`` is shared by ``chatcli chat`` and the tests.

Threads: the model loads in a thread worker (:mod:`chatcli.tui.loading`, progress
posted as messages) and every answer streams in a thread worker run by
:attr:`ChatApp.stream`, a :class:`~chatcli.tui.stream_controller.StreamController`,
which paces the UI's updates (at most one per ``flush_interval``). Esc (or Ctrl+C)
sets the stream's cancel event; the engine ends with ``Done("cancelled")`` and the
partial answer stays, marked stopped.

Slash commands, the command palette and F8 run with :attr:`ChatApp.commands`, a
:class:`~chatcli.tui.command_context.TuiCommandContext` over the app's public methods,
so the TUI and the plain REPL run the same command functions; a command's bug is one
error line and the chat goes on. Any other unhandled exception ends the app with exit
code 1 and one line on stderr (:func:`chatcli.tui.crash.crash_report`; a plain
traceback with ``tracebacks=True``), never Textual's report with every frame's locals.

Focus: typed text goes to the prompt. The token inspector takes keys only when the
person enters it (Ctrl+↑, a click on a token); Esc leaves it for the prompt in one press.
Esc works one layer at a time: stop the answer, close the command hints, leave the
inspector, end a ``/compare`` tint.

The tint (F2, ``/tint``) and the panel (F3, F4) are remembered in the ``ui_state`` file
(:mod:`chatcli.tui.ui_state`) when the app is given one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import RenderableType
from rich.text import Text
from textual import on
from textual.actions import SkipAction
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import Footer

from chatcli.chat.core import ChatCore, EngineFactory, Job
from chatcli.chat.builtin_commands import build_registry
from chatcli.chat.commands import Registry, is_command, message_text
from chatcli.engine.params import SamplingParams
from chatcli.errors import ChatcliError
from chatcli.chat.store import Store
from chatcli.tour.guide import Tour
from chatcli.tour.tour_command import install as install_tour
from chatcli.tui.widgets.answer import AnswerView
from chatcli.tui.command_context import TuiCommandContext
from chatcli.tui.crash import crash_report
from chatcli.tui.hangup import install_hangup
from chatcli.tui.loading import load_engine
from chatcli.tui.messages import (
    BranchRequested, EngineFailed, EngineLoaded, EngineNotice, LeaveAlternatives, LoadProgress, PickAlternative,
    SiblingRequested, StatusHint, StreamDone, StreamTick, TokenSelected,
)  # fmt: skip
from chatcli.tui.palette import palette_commands
from chatcli.tui.widgets.attention_view import AttentionTint
from chatcli.tui.widgets.panel_view import PanelView, StepMove, ViewRequested
from chatcli.tui.widgets.probs import ProbabilityPanel
from chatcli.tui.widgets.prompt import ChatInput, CommandHints
from chatcli.tui.widgets.status import StatusBar
from chatcli.tui.widgets.tour_card import TourCard
from chatcli.tui.stream_controller import StreamController
from chatcli.tui.token_text import TINTS
from chatcli.tui.ui_state import ViewSettings
from chatcli.tui.widgets.transcript import TINT_HELP, LoadingBanner, Transcript, welcome_content

if TYPE_CHECKING:
    from chatcli.plugins.manager import PluginManager


class ChatApp(App):
    """The chat app: it owns the chat core, the layout and model loading, and wires the parts.

    :attr:`stream` (tui/stream_controller.py) runs and paces the answer being written;
    the widgets keep their own view state (the transcript: tint, inspected and compared
    answers; the panel: what it shows) and post messages that the app handles here, next
    to the key actions; :attr:`commands` (tui/command_context.py) is what slash commands
    call; tui/palette.py lists the command palette's entries.
    """

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
        Binding("f5", "cycle_view", "View", id="panel_view"),
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
        layers: Mapping[str, Mapping[str, object]] | None = None,
        thinking: bool | None = None,
        system: str | None = None,
        store: Store | None = None,
        store_warning: str | None = None,
        resume: int | str | None = None,
        tint: str | None = None,
        flush_interval: float = 0.05,
        registry: Registry | None = None,
        plugins: PluginManager | None = None,
        notes: Iterable[str] = (),
        ui_state: Path | None = None,
        tracebacks: bool = False,
        tour: Tour | None = None,
    ) -> None:
        super().__init__()
        self.tracebacks = tracebacks  # --debug: a crash prints a plain traceback, command bugs show one
        self.engine_factory = engine_factory
        self.model_name = model_name
        self.plugins = plugins  # this chat's plugin manager (the CLI's), or None: no plugins
        self.registry = registry if registry is not None else build_registry(plugins)
        self.store_warning = store_warning
        self.resume_id = resume
        self._notices: list[tuple[str, str]] = [(n, "warning") for n in notes]
        self.view_settings = ViewSettings(ui_state)  # the tint and the panel, kept across restarts
        if self.view_settings.warning:
            self._notices.append((self.view_settings.warning, "warning"))
        # An explicit --tint wins for this session; otherwise the remembered one. The transcript keeps it.
        self._start_tint = tint if tint in TINTS else self.view_settings.state.tint
        self._told_panel_hidden = False  # the "panel hidden at this width" line is said once
        self._laid_out = False  # on_mount has drawn the transcript (a note said before would be wiped)
        self._crash: BaseException | None = None
        # The guided tour (chatcli tour, /tour) hears the chat's events, the commands, the tokens
        # selected and the panel's views; its card sits above the prompt.
        self.tour = tour
        if tour is not None and self.registry.get("tour") is None:
            install_tour(self.registry, tour)
        listeners = ((plugins.notify,) if plugins is not None else ()) + ((tour.listener,) if tour is not None else ())
        self.core = ChatCore(None, store=store, params=params, layers=layers, thinking=thinking, system=system,
                             on_notice=self._notice_from_core, listeners=listeners)
        self.stream = StreamController(
            lambda job, cancel: self.core.run(job, cancel),
            spawn=lambda body: self.run_worker(body, name="generate", group="generate", thread=True, exit_on_error=False),
            on_tick=lambda node_id: self.post_message(StreamTick(node_id)),  # the worker thread's ways in
            on_notice=lambda text, kind: self.post_message(EngineNotice(text, kind)),
            on_done=lambda node_id, done: self.post_message(StreamDone(node_id, done)),
            schedule=self.set_timer,
            flush_interval=flush_interval,
        )
        self.commands = TuiCommandContext(self)  # what slash commands and plugin screens get
        self._queued: str | None = None  # a message sent while the model was loading
        self._activity: str | None = None  # a command's long-running work (set_activity), shown as the status state
        self._restore_sighup = None

    # --- layout ----------------------------------------------------------------------------

    def compose(self):
        with Horizontal(id="main"):
            yield Transcript(id="transcript", tint=self._start_tint)
            yield ProbabilityPanel(wanted=self.view_settings.state.panel, compare=self.view_settings.state.sampled)
        if self.tour is not None:
            yield TourCard(self.tour)
        yield CommandHints()
        yield ChatInput(self.registry, self._initial_history(), placeholder=self._placeholder())
        yield StatusBar(self.plugins)
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
        await self.redraw()
        if self.store_warning:
            self.say(self.store_warning, "warning")
        for message, kind in self._notices:
            self.say(message, kind)
        self._notices.clear()
        if self.tour is not None:
            self.query_one(TourCard).greet()
        self._laid_out = True
        self._fit_panel(self.size.width)
        await self.transcript.mount(LoadingBanner(self.model_name or "model"))
        self.refresh_status(state="loading")
        self.prompt.focus()
        load = partial(load_engine, self.engine_factory, self.post_message)
        self.run_worker(load, name="load", group="load", exclusive=True, thread=True, exit_on_error=False)
        if not self.is_headless:  # a closing terminal: stop the answer, let it be saved, leave
            self._restore_sighup = install_hangup(lambda: self.stream.shutdown(3.0))

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


    # --- prompt events (``@on`` handlers must be defined on the App subclass itself) -------

    @on(ChatInput.Submitted)
    async def on_submitted(self, event: ChatInput.Submitted) -> None:
        text = event.text
        self.query_one(CommandHints).display = False
        if is_command(text):
            self.commands.run(text.strip())
            self.refresh_status()
            return
        await self._send(message_text(text))

    @on(ChatInput.Changed)
    def _on_prompt_changed(self, event: ChatInput.Changed) -> None:
        self.query_one(CommandHints).show_for(self.prompt.completions())

    def on_descendant_focus(self, event) -> None:
        if isinstance(event.widget, ChatInput):  # inspection ends; the panel follows a live answer again
            for transcript in self.query(Transcript):  # none left while the app is being torn down
                transcript.clear_inspected()
            self.stream.follow()

    # --- sending and streaming (the state lives in self.stream) ---------------------------

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

    # --- inspection: the panel shows the step a token of an answer was drawn from ----------

    def _show_step(self, node_id: int, index: int, *, following: bool) -> None:
        node = self.core.conv.nodes.get(node_id)
        if node is None:
            return
        view = self.transcript.view_for(node_id)
        comparison = view.comparison if view is not None and view.node is node else None
        self.panel.show_step(node, index, following=following, comparison=comparison)

    @on(TokenSelected)
    def _token_selected(self, message: TokenSelected) -> None:
        following = self.stream.token_selected(message.node_id, message.index)
        self._show_step(message.node_id, message.index, following=following)
        node = self.core.conv.nodes.get(message.node_id)
        if self.tour is not None and self.panel.display and node is not None and 0 <= message.index < len(node.steps):
            self.tour.saw_step(node.steps[message.index])  # the learner saw this step's distribution

    @on(BranchRequested)
    async def _branch_requested(self, message: BranchRequested) -> None:
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

    @on(SiblingRequested)
    async def _sibling_requested(self, message: SiblingRequested) -> None:
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

    # --- the panel's views (F5, the inspector's d/w/l/a, a view's keys, /whatif /lens /attention) --

    def open_panel_view(self, name: str, **options) -> PanelView | None:
        """Show the panel's view ``name`` for the selected step (the panel shows, whatever the width).
        From the inspector or another view, a view with keys of its own gets the focus."""
        inspecting = isinstance(self.focused, (AnswerView, PanelView))
        view = self.panel.set_view(name, **options)
        if self.tour is not None and view is not None:
            self.tour.opened_view(name)  # chapters 2 and 6 ask for the what-if and lens views
        if not self.panel.display:
            self.panel.wanted = True
            self.panel.pin()
        if inspecting:
            if view is not None and view.can_focus:
                self.call_after_refresh(view.focus)
            else:
                self.transcript.focus_inspected()
        return view

    def action_panel_view(self, name: str) -> None:
        self.open_panel_view(name)

    def action_cycle_view(self) -> None:
        self.open_panel_view(self.panel.next_view())

    @on(ViewRequested)
    def _view_requested(self, message: ViewRequested) -> None:
        self.open_panel_view(message.view)

    @on(AttentionTint)
    def _attention_tint(self, message: AttentionTint) -> None:
        self.transcript.set_attention(message.amap)  # the attention view shows (a map) or left (None)

    @on(StepMove)
    def _step_move(self, message: StepMove) -> None:
        view = self.transcript.inspected
        if view is None or not view.is_attached or view.cursor is None:
            self.bell()
            return
        view.move_to(view.cursor + message.delta)

    @on(StatusHint)
    def _status_hint(self, message: StatusHint) -> None:
        self.status.flash(message.text)

    @on(PickAlternative)
    def _pick_alternative(self) -> None:
        self.panel.focus_alternatives()

    @on(LeaveAlternatives)
    def _leave_alternatives(self) -> None:
        if not self.transcript.focus_inspected():
            self.prompt.focus()

    @property
    def tint(self) -> str:
        """How answers are shown ("off" | "model_prob" | "entropy"); the transcript keeps it."""
        return self.transcript.tint

    def set_tint(self, mode: str) -> None:
        """The person chose a tint (F2, /tint): every answer shows it, and it is remembered."""
        self.end_comparison()
        self.transcript.set_tint(mode)
        self.refresh_status()
        self.notify(f"tint: {mode} — {TINT_HELP[mode]}", timeout=2)
        self._remember(tint=mode)

    # --- the panel: hidden on a narrow screen (one line says so), remembered when toggled -----

    def on_resize(self, event: Resize) -> None:
        if self._laid_out:  # before that, on_mount fits the panel to the first size
            self._fit_panel(event.size.width)

    def _fit_panel(self, width: int) -> None:
        panel = self.panel
        panel.fit(width)
        if panel.hidden_by_width and not self._told_panel_hidden:
            self._told_panel_hidden = True
            self.say("the probability panel is hidden at this width — F3 shows it", "info")

    def _remember(self, **changes) -> None:
        """Keep the view settings for the next start (when the app was given a file for them)."""
        warning = self.view_settings.remember(**changes)
        if warning:
            self.say(warning, "warning")

    # --- /compare: per-token KL tinting ----------------------------------------------------

    def end_comparison(self) -> bool:
        """Back to normal tinting (Esc, F2, /tint, a new answer); False when no comparison was shown."""
        view = self.transcript.compared
        if view is None:  # none, or its view moved to a sibling or was redrawn since
            return False
        view.set_comparison(None)
        if self.panel.node_id == view.node.id and view.cursor is not None:
            self._show_step(view.node.id, view.cursor, following=False)
        return True

    # --- key actions (the BINDINGS above; answers bind ↑/↓ and Esc to app actions too) -------

    def action_escape(self) -> None:
        if self.screen is not self.screen_stack[0]:
            raise SkipAction()  # a modal (the command palette) closes itself
        # One layer per press: the answer being written, the command hints, the inspector
        # (back to the prompt at once, the /compare tint stays), then the /compare tint.
        hints = self.query_one(CommandHints)
        if self.stream.streaming and not self.stream.stopping:
            self.action_stop()
        elif isinstance(self.focused, PanelView) and self.transcript.focus_inspected():
            pass  # from a view of the panel back to the token it shows
        elif not isinstance(self.focused, ChatInput):
            self.prompt.focus()
        elif hints.display:
            hints.display = False
        elif self.end_comparison():
            self.refresh_status()
        else:
            raise SkipAction()

    def action_stop(self) -> None:
        if self.stream.cancel():
            self.refresh_status(state="stopping")

    def action_interrupt(self) -> None:
        if self.stream.streaming and not self.stream.stopping:
            self.action_stop()
            return
        raise SkipAction()  # copy in the prompt, or the "Ctrl+Q quits" hint

    def action_focus_input(self) -> None:
        self.prompt.focus()

    def action_inspect(self) -> None:
        if not self.transcript.inspect_next(self.focused):
            self.notify("no answer to inspect yet", timeout=2)

    def action_focus_answer(self, delta: int) -> None:
        if isinstance(self.focused, AnswerView) and self.transcript.focus_neighbour(self.focused, delta):
            self.prompt.focus()  # below the last answer

    def action_cycle_tint(self) -> None:
        if self.end_comparison():  # F2 first returns a compared answer to the normal tint
            self.refresh_status()
            return
        self.set_tint(TINTS[(TINTS.index(self.tint) + 1) % len(TINTS)])

    def action_toggle_panel(self) -> None:
        self.panel.toggle()
        self._remember(panel=self.panel.wanted)

    def action_toggle_compare(self) -> None:
        self.panel.toggle_compare()
        self._remember(panel=self.panel.wanted, sampled=self.panel.compare)

    def action_status_action(self) -> None:
        """F8: run the slash command a plugin's status item offers (e.g. /finetune load)."""
        action = self.status.info.action
        if not action:
            self.notify("nothing to run: F8 runs what the status bar offers (e.g. /finetune load when a run is done)", timeout=3)
            return
        self.commands.run(action)
        self.refresh_status()
        self.status.poll_plugins()

    async def action_quit(self) -> None:
        self.stream.cancel()
        worker = self.stream.handle
        if worker is not None:
            try:
                await worker.wait()
            except Exception:
                pass
        self.exit()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from palette_commands(self)

    # --- what commands and the rest of the app call ------------------------------------------

    @property
    def busy(self) -> bool:
        """An answer streams, or a command's own generation runs (see :meth:`set_activity`)."""
        return self.stream.streaming or self._activity is not None

    def set_activity(self, state: str | None) -> None:
        """A command's own generation (``/rank`` making candidates) runs: the status bar shows
        ``state`` and the chat counts as busy (idle-only commands wait); None: it ended."""
        self._activity = state
        self.refresh_status(state=state or ("ready" if self.core.engine is not None else "no model"))

    def say(self, message: RenderableType, kind: str = "info") -> None:
        """A note in the transcript ("info" | "warning" | "error" | "result"); errors ring the bell."""
        self.transcript.add_note(message, kind)
        if kind == "error":
            self.bell()

    def _notice_from_core(self, message: str, kind: str) -> None:
        # May run in the generation worker thread; post_message is the thread-safe way in.
        self.post_message(EngineNotice(message, kind))

    # --- helpers ---------------------------------------------------------------------------

    async def redraw(self) -> None:
        await self.transcript.show_conversation(
            self.core.conv, model=self._model_label(),
            welcome=welcome_content(self.core.identity.name if self.core.identity else self.model_name),
        )
        self.panel.clear()
        self.refresh_status()

    def refresh_status(self, **changes) -> None:
        self.status.show_chat(self.core, model=self.model_name or "", tint=self.tint, **changes)

    def on_unmount(self) -> None:
        self.stream.cancel()
        if self._restore_sighup is not None:
            self._restore_sighup()

    # --- a crash: exit code 1 and one line, never the frames' locals -----------------------

    def _handle_exception(self, error: Exception) -> None:
        # Textual's path for an exception no handler caught: it sets return_code 1, keeps
        # the error for run_test, and calls _fatal_error (below) to report and leave.
        self._crash = error
        super()._handle_exception(error)

    def _fatal_error(self) -> None:
        # Replaces Textual's report, a Rich traceback with show_locals=True: it would print
        # whatever the frames held (an adapter's config, the conversation, a key).
        self.bell()
        error = self._crash
        text = crash_report(error, tracebacks=self.tracebacks) if error is not None else "chatcli: internal error"
        self.error_console.soft_wrap = True  # neither wrapped nor cropped at 80 columns: the line as it is
        self._exit_renderables.append(Text(text))
        self._close_messages_no_wait()


def make_app(engine_factory: EngineFactory, **options) -> ChatApp:
    """The chat app on the engine ``engine_factory(progress)`` returns (loaded in a worker thread).

    Options: ``model_name``, ``params`` (SamplingParams) or ``layers`` (the session's sampling
    layers: :mod:`chatcli.settings.sampling_state`), ``thinking`` (``--think``/``--no-think``),
    ``system``, ``store`` (a
    :class:`~chatcli.chat.store.Store` or None for no history), ``store_warning``,
    ``resume`` (an id, or "latest"), ``tint`` ("off" | "model_prob" | "entropy"; None: the
    remembered one, else "off"),
    ``flush_interval`` (seconds between UI updates while streaming), ``plugins`` (a
    :class:`~chatcli.plugins.manager.PluginManager`: its commands, event hooks, status items
    and screens), ``registry`` (the slash commands; default: built from ``plugins``), ``notes``
    (warnings to show at start, e.g. plugin problems), ``ui_state`` (the file that remembers the
    tint and the panel: :func:`chatcli.paths.ui_state_path`; None, the default, remembers nothing),
    ``tracebacks`` (``--debug``: a crash prints a plain traceback instead of one line), ``tour`` (a
    :class:`~chatcli.tour.guide.Tour`: ``/tour``, its card above the prompt, and the events it checks).
    """
    return ChatApp(engine_factory, **options)


CSS_FILE = Path(__file__).with_name("chatcli.tcss")
