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

This module composes the app, starts it and wires what is common (the prompt, the
commands, the status, a crash); three mixins hold the rest, each in its own file:
:mod:`chatcli.tui.app_keys` (the key bindings and their actions),
:mod:`chatcli.tui.app_answers` (loading, sending, streaming, branches and versions) and
:mod:`chatcli.tui.app_panel` (the panel, its views, the tint, ``/compare``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import RenderableType
from rich.text import Text
from textual import on
from textual.app import App, SystemCommand
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer

from chatcli.chat.core import ChatCore, EngineFactory
from chatcli.chat.builtin_commands import build_registry
from chatcli.chat.commands import Registry, is_command, message_text
from chatcli.engine.params import SamplingParams
from chatcli.errors import ChatcliError
from chatcli.chat.store import Store
from chatcli.tour.guide import Tour
from chatcli.tour.tour_command import install as install_tour
from chatcli.tui.app_answers import AnswerFlow
from chatcli.tui.app_keys import KEY_BINDINGS, KeyActions
from chatcli.tui.app_panel import PanelControl
from chatcli.tui.command_context import TuiCommandContext
from chatcli.tui.crash import crash_report
from chatcli.tui.hangup import install_hangup
from chatcli.tui.loading import load_engine
from chatcli.tui.messages import EngineNotice, StreamDone, StreamTick
from chatcli.tui.palette import palette_commands
from chatcli.tui.widgets.probs import ProbabilityPanel
from chatcli.tui.widgets.prompt import ChatInput, CommandHints
from chatcli.tui.widgets.status import StatusBar
from chatcli.tui.widgets.tour_card import TourCard
from chatcli.tui.stream_controller import StreamController
from chatcli.tui.token_text import TINTS
from chatcli.tui.ui_state import ViewSettings
from chatcli.tui.widgets.transcript import LoadingBanner, Transcript, welcome_content

if TYPE_CHECKING:
    from chatcli.plugins.manager import PluginManager


class ChatApp(KeyActions, AnswerFlow, PanelControl, App):
    """The chat app: it owns the chat core, the layout and model loading, and wires the parts.

    :attr:`stream` (tui/stream_controller.py) runs and paces the answer being written;
    the widgets keep their own view state (the transcript: tint, inspected and compared
    answers; the panel: what it shows) and post messages that the app handles (here and in
    its mixins: tui/app_answers.py, tui/app_panel.py), next to the key actions
    (tui/app_keys.py); :attr:`commands` (tui/command_context.py) is what slash commands
    call; tui/palette.py lists the command palette's entries.
    """

    CSS_PATH = "chatcli.tcss"
    TITLE = "chatcli"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (96, "-wide")]
    BINDINGS = KEY_BINDINGS  # and their actions: tui/app_keys.py

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

    # --- prompt events (``@on`` handlers must be defined on the App subclass itself; the mixins
    # handle their messages by name) -----------------------------------------------------------

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
