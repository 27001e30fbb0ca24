"""Plain mode: a line-based chat for dumb terminals and pipes, with the same slash commands as the TUI.

Interactive (stdin is a terminal): a ``› `` prompt with readline editing, a line
ending in ``\\`` continues on the next line, answers stream with tokens coloured
by certainty (``/tint``), Ctrl+C stops the answer (not the program), Ctrl+D or
``/quit`` leaves. Scripted (stdin is not a terminal): every line is a message or
a command, answers are printed as plain text, one answer per message, and the
exit code is 1 if any answer failed.

The engine streams in a worker thread and the main thread prints, so Ctrl+C
always lands in the printing loop and reaches the engine as a cancel event.
Plain mode declares no optional front-end ability (:data:`PLAIN`): no screens,
no status bar, one thread.
"""

from __future__ import annotations

import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import IO

from rich.console import Console, RenderableType
from rich.text import Text

from chatcli.chat.builtin_commands import PluginHost, build_registry
from chatcli.chat.commands import Registry, execute, is_command, message_text
from chatcli.chat.core import ChatCore, EngineFactory, Job, Listener
from chatcli.chat.frontend import FrontEnd
from chatcli.engine.events import Done, Notice, Step
from chatcli.engine.params import SamplingParams
from chatcli.errors import ChatcliError, describe_bug
from chatcli.chat.printed_steps import step_style
from chatcli.chat.store import Store
from chatcli.chat.text_input import clean_text, tolerant
from chatcli.tokenizer.thinking import ThinkingTracker, thinking_steps

PROMPT = "› "
FAINT = "dim italic"  # a Qwen3-style answer's <think> reasoning, before its answer
PLAIN = FrontEnd("plain")


class Repl:
    """The plain front end; implements :class:`chatcli.chat.commands.CommandContext`."""

    frontend = PLAIN

    def __init__(
        self,
        core: ChatCore,
        *,
        console: Console,
        err: Console,
        interactive: bool,
        tint: str = "model_prob",
        registry: Registry | None = None,
        idle: Callable[[Repl], None] | None = None,
    ) -> None:
        self.core = core
        self.idle = idle  # called whenever the REPL is about to read a line (the tour's notes go out then)
        self.registry = registry if registry is not None else build_registry()
        self.console = console
        self.err = err
        self.interactive = interactive
        self.tint = tint if interactive else "off"
        self.busy = False
        self.done = False
        self.failures = 0

    # --- CommandContext --------------------------------------------------------------------

    def say(self, message: RenderableType, kind: str = "info") -> None:
        if kind == "error":
            self.failures += 0 if self.interactive else 1
            self.err.print(Text(f"error: {message}", style="bold red") if isinstance(message, str) else message)
        elif kind == "warning":
            self.err.print(Text(str(message), style="yellow") if isinstance(message, str) else message)
        elif kind == "info" and isinstance(message, str):
            (self.console if self.interactive else self.err).print(Text(message, style="dim"))
        else:
            self.console.print(message)

    def run_job(self, job: Job) -> None:
        self.stream(job)

    def conversation_changed(self) -> None:
        conv = self.core.conv
        if conv.is_empty():
            self.say("(new conversation)", "info")
            return
        for node in conv.path():
            if node.role == "user":
                self.console.print(Text(PROMPT + node.content, style="bold"))
            else:
                self.console.print(self._answer_text(node.steps, node.content))

    def set_tint(self, mode: str) -> None:
        self.tint = mode
        self.say(f"tint: {mode}", "info")

    def quit(self) -> None:
        self.done = True

    def adapters_changed(self) -> None:
        from chatcli.chat.lora_commands import status_text

        text = status_text(self.core.engine) if self.core.engine is not None else ""
        self.say(text or "no adapters active", "info")

    # --- streaming -------------------------------------------------------------------------

    def stream(self, job: Job) -> Done:
        """Print the answer as it streams; Ctrl+C stops it. Returns the Done event."""
        cancel = threading.Event()
        events: queue.Queue = queue.Queue()

        def work() -> None:
            try:
                for event in self.core.run(job, cancel):
                    events.put(event)
            except BaseException as e:  # an engine bug: reported, the chat goes on
                events.put(Done("error", 0, 0, None, None, error=f"{type(e).__name__}: {e}"))
            events.put(None)

        self.busy = True
        # While the answer streams, Ctrl+C (SIGINT) only sets `cancel`: a KeyboardInterrupt
        # raised between two statements here could leave the worker running unobserved.
        restore = _sigint_sets(cancel)
        worker = threading.Thread(target=work, name="chatcli-generate", daemon=True)
        worker.start()
        done: Done | None = None
        held: list[Notice] = []  # loop warnings: one line once the answer has ended, not inside its text
        out = sys.stdout if not self.interactive else None
        thinking = ThinkingTracker()  # a Qwen3-style answer's <think> reasoning prints faint
        try:
            while True:
                try:
                    event = events.get(timeout=0.1)
                except queue.Empty:
                    continue
                except KeyboardInterrupt:
                    cancel.set()
                    continue
                if event is None:
                    break
                try:
                    if isinstance(event, Step):
                        if out is not None:
                            out.write(event.text)
                            out.flush()
                        else:
                            style = f"{step_style(event, self.tint)} {FAINT if thinking.feed(event.text) else ''}".strip()
                            self.console.print(Text(event.text, style=style), end="", soft_wrap=True)
                    elif isinstance(event, Notice) and event.kind == "loop":
                        held.append(event)
                    elif isinstance(event, Notice):
                        self.err.print(Text(event.message, style="yellow"))
                    elif isinstance(event, Done):
                        done = event
                except KeyboardInterrupt:
                    cancel.set()
        except BaseException:
            cancel.set()  # never join a worker that nobody will stop
            raise
        finally:
            worker.join()
            restore()
            self.busy = False
        done = done or Done("cancelled", 0, 0, None, None)
        tail = job.node.content[len(job.node.step_text):] if job.node.content.startswith(job.node.step_text) else ""
        if tail:
            (out.write(tail) if out is not None else self.console.print(tail, end=""))
        if out is not None:
            if not job.node.content.endswith("\n"):
                out.write("\n")
            out.flush()
        else:
            self.console.print()
            if done.finish_reason == "cancelled":
                self.console.print(Text("[stopped — /continue resumes it]", style="yellow"))
            elif done.finish_reason == "length":
                self.console.print(Text("[cut at max_tokens — /continue goes on]", style="yellow"))
            elif done.tokens_per_s:
                self.console.print(Text(f"{done.completion_tokens} tokens · {done.tokens_per_s:.1f} tok/s", style="dim"))
        for notice in held:
            self.err.print(Text(notice.message, style="yellow"), soft_wrap=True)
        if done.finish_reason == "error":
            self.failures += 1
            self.err.print(Text(f"error: {done.error}", style="bold red"))
        return done

    def _answer_text(self, steps, content: str) -> Text:
        text = Text()
        faint = thinking_steps(s.text for s in steps)
        for i, s in enumerate(steps):
            text.append(s.text, style=f"{step_style(s, self.tint)} {FAINT if i < faint else ''}".strip())
        shown = "".join(s.text for s in steps)
        if content.startswith(shown):
            text.append(content[len(shown):])
        return text

    # --- the loop --------------------------------------------------------------------------

    def handle(self, line: str) -> None:
        if is_command(line):
            try:
                execute(self, line.strip())
            except Exception as e:  # a bug in a command (or a plugin's) is one line; the chat goes on
                self.say(f"{line.split()[0]} failed ({describe_bug(e)})", "error")
            return
        text = message_text(line)
        if not text:
            return
        try:
            job = self.core.send(text)
        except ChatcliError as e:
            self.say(e.message, "error")
            return
        self.stream(job)

    def read_message(self, stdin: IO[str]) -> str | None:
        """One message: a line, or several joined by trailing backslashes. None at end of input."""
        parts: list[str] = []
        while True:
            try:
                if self.interactive:
                    line = input(PROMPT if not parts else "… ")
                else:
                    line = stdin.readline()
                    if line == "":
                        raise EOFError
                    line = line.rstrip("\n")
            except EOFError:
                return "\n".join(parts) if parts else None
            if self.interactive and line.endswith("\\"):
                parts.append(line[:-1])
                continue
            parts.append(line)
            return "\n".join(parts)

    def loop(self, stdin: IO[str]) -> int:
        while not self.done:
            if self.idle is not None:
                self.idle(self)
            try:
                line = self.read_message(stdin)
            except KeyboardInterrupt:
                self.console.print()
                self.say("(Ctrl+D or /quit leaves)", "info")
                continue
            if line is None:
                if self.interactive:
                    self.console.print()
                break
            line, replaced = clean_text(line)
            if replaced:
                self.say("that line was not valid UTF-8: its undecodable bytes are sent as \ufffd (U+FFFD)", "warning")
            if line.strip():
                self.handle(line)
        return 1 if self.failures else 0


def run_repl(
    engine_factory: EngineFactory,
    *,
    store: Store | None = None,
    store_warning: str | None = None,
    params: SamplingParams | None = None,
    layers: Mapping[str, Mapping[str, object]] | None = None,
    thinking: bool | None = None,
    system: str | None = None,
    resume: int | str | None = None,
    tint: str = "model_prob",
    stdin: IO[str] | None = None,
    console: Console | None = None,
    err: Console | None = None,
    interactive: bool | None = None,
    progress_enabled: bool = True,
    registry: Registry | None = None,
    plugins: PluginHost | None = None,
    listeners: Iterable[Listener] = (),
    idle: Callable[[Repl], None] | None = None,
) -> int:
    """Run plain mode until end of input or /quit; returns the exit code.

    ``plugins`` (the CLI's plugin manager, or None) hears the chat's events and, unless a
    ``registry`` is given, adds its slash commands to the one this front end builds.
    ``listeners`` hear them too (the guided tour); ``idle(repl)`` runs before each line is read.
    """
    stdin = tolerant(stdin or sys.stdin)  # bytes that are not UTF-8 reach clean_text, not a traceback
    interactive = stdin.isatty() if interactive is None else interactive
    console = console or Console(highlight=False)
    err = err or Console(stderr=True, highlight=False)
    listeners = ((plugins.notify,) if plugins is not None else ()) + tuple(listeners)
    core = ChatCore(None, store=store, params=params, layers=layers, thinking=thinking, system=system,
                    listeners=listeners)
    registry = registry if registry is not None else build_registry(plugins)
    repl = Repl(core, console=console, err=err, interactive=interactive, tint=tint, registry=registry, idle=idle)
    core.on_notice = lambda message, kind: repl.say(message, kind)
    if store_warning:
        repl.say(store_warning, "warning")
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
    from chatcli.progress import stderr_progress

    with stderr_progress(progress_enabled) as progress:
        engine = engine_factory(progress)  # a ChatcliError goes to the CLI's one-line error
    core.attach_engine(engine)
    if resume is not None:
        try:
            core.resume(resume)
        except ChatcliError as e:
            repl.say(e.message, "error")
            return 2
        repl.conversation_changed()
    if interactive:
        ident = engine.identity
        console.print(Text.assemble(
            ("chatcli ", "bold"), (f"{ident.name} ", "bold cyan"), (f"({ident.precision}/{ident.device}) ", "dim"),
            ("— /help for commands, Ctrl+C stops an answer, Ctrl+D leaves", "dim"),
        ))
    return repl.loop(stdin)


def _sigint_sets(event: threading.Event) -> Callable[[], None]:
    """Make SIGINT set ``event`` instead of raising; return the function that undoes it."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signal handlers belong to the main thread
    previous = signal.signal(signal.SIGINT, lambda signum, frame: event.set())
    return lambda: signal.signal(signal.SIGINT, previous)
