"""A bug never shows a variable's value: a command's bug is one transcript line and the chat goes on;
anything else ends ``chatcli chat`` with a non-zero code and one line (a plain traceback with --debug)."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest
from textual.screen import Screen

from chatcli.chat.builtin_commands import build_registry
from chatcli.chat.commands import Command
from chatcli.tui.widgets.transcript import Note
from tests.fake_engine import FakeEngine
from tests.tui_support import build_app, ready, run, send, until_idle, wait_for

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-do-not-print-me"


def _errors(app) -> list[str]:
    return [n.plain for n in app.query(Note) if n.kind == "error"]


def test_a_command_that_raises_is_one_line_and_the_chat_goes_on():
    registry = build_registry(None)
    heard: list[object] = []

    def boom(ctx):
        adapter_config = {"api_key": SECRET}  # noqa: F841 - a local that must never be printed
        raise KeyError("r")

    def later(ctx):  # a command's background work calling back on the UI thread, then failing there
        ctx.call_later(lambda: 1 / 0)

    def threaded(ctx):  # and from a thread of its own: the thread gets None, the chat one line
        threading.Thread(target=lambda: heard.append(ctx.call_from_thread(_fails)), daemon=True).start()

    registry.add(Command("boom", boom, "raise"))
    registry.add(Command("later", later, "raise later"))
    registry.add(Command("threaded", threaded, "raise from a thread"))

    async def go():
        app = build_app(FakeEngine(length=5), registry=registry)
        async with app.run_test(size=(120, 30)) as pilot:
            await ready(pilot)
            await send(pilot, "/boom")
            assert _errors(app) == ["internal error in /boom: KeyError: 'r' (chatcli --debug chat shows the traceback)"]
            await send(pilot, "/later")
            await wait_for(pilot, lambda: len(_errors(app)) == 2, what="the callback's error")
            assert "ZeroDivisionError: division by zero" in _errors(app)[1]
            await send(pilot, "/threaded")
            await wait_for(pilot, lambda: heard == [None] and len(_errors(app)) == 3, what="the thread's callback")
            assert "_fails()" in _errors(app)[2] and "ValueError: bad state" in _errors(app)[2]
            await send(pilot, "still here?")  # the chat goes on
            await until_idle(pilot)
            assert app.is_running and app.core.conv.leaf.content
            assert not any(SECRET in n.plain for n in app.query(Note))

    run(go())


def _fails():
    raise ValueError("bad state")


def test_load_lora_raising_a_bug_is_one_line(tiny_model_dir, tmp_path, monkeypatch):
    from chatcli.engine.loader import load_engine
    from chatcli.lora.manager import AdapterManager
    from chatcli.tui.app import make_app

    def broken(self, path, name=None, scale=1.0):
        config = {"r": None, "lora_alpha": SECRET}  # noqa: F841 - what a broken adapter's config holds
        raise TypeError("unsupported operand type(s) for /: 'int' and 'NoneType'")

    monkeypatch.setattr(AdapterManager, "load", broken)
    (tmp_path / "adapter").mkdir()

    async def go():
        app = make_app(lambda progress: load_engine(str(tiny_model_dir), device="cpu"), store=None)
        async with app.run_test(size=(120, 30)) as pilot:
            await ready(pilot)
            await send(pilot, f"/load-lora {tmp_path / 'adapter'}")
            assert len(_errors(app)) == 1 and _errors(app)[0].startswith("internal error in /load-lora: TypeError:")
            assert app.is_running

    run(go())


class Crashing(Screen):
    def on_mount(self) -> None:
        config = {"api_key": SECRET}  # noqa: F841 - a local that must never be printed
        raise RuntimeError("widget handler failed")


def test_a_crash_in_a_widget_handler_is_exit_code_1_and_one_line(capsys):
    registry = build_registry(None)
    registry.add(Command("crash", lambda ctx: ctx.push_screen(Crashing()), "crash"))

    async def go():
        app = build_app(FakeEngine(length=3), registry=registry)
        with pytest.raises(RuntimeError, match="widget handler failed"):  # run_test re-raises it for the test
            async with app.run_test(size=(100, 30)) as pilot:
                await ready(pilot)
                await send(pilot, "/crash")
                await pilot.pause(0.2)
        return app

    app = run(go())
    assert app.return_code == 1
    err = capsys.readouterr().err
    assert "chatcli: internal error: RuntimeError: widget handler failed (run with --debug for the traceback)" in err
    assert SECRET not in err and "locals" not in err and "Traceback" not in err


PLUGIN = f'''
from textual.screen import Screen
from chatcli.plugins.hookspecs import hookimpl


class Crashing(Screen):
    def on_mount(self):
        config = {{"api_key": {SECRET!r}}}
        raise RuntimeError("widget handler failed")


@hookimpl
def register_commands(register):
    register("crash", lambda ctx: ctx.push_screen(Crashing()), "crash the chat")
'''


def _chat_in_a_terminal(home: Path, model: Path, *flags: str) -> tuple[int, str]:
    """``chatcli [flags] chat`` on a pseudo-terminal; type /crash once it is up; (exit code, all output)."""
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # the child: the chat, as a person would start it
        os.environ.update(CHATCLI_HOME=str(home), PYTHONPATH=str(ROOT), TERM="xterm-256color", COLUMNS="100", LINES="30")
        os.execv(sys.executable, [sys.executable, "-m", "chatcli", *flags, "chat", "--model", str(model), "--no-save"])
    out = b""
    sent = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready_fds, _, _ = select.select([fd], [], [], 0.2)
        if ready_fds:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child has gone: the terminal is closed
                break
            if not chunk:
                break
            out += chunk
        if not sent and b"commands" in out:  # the prompt's placeholder: the app is up
            time.sleep(0.5)
            os.write(fd, b"/crash\r")
            sent = True
    else:
        os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode("utf-8", "replace")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_chatcli_chat_exits_non_zero_after_a_crash_and_prints_no_locals(tiny_model_dir, tmp_path):
    home = tmp_path / "home"
    (home / "config" / "plugins").mkdir(parents=True)
    (home / "config" / "plugins" / "crashing.py").write_text(PLUGIN, encoding="utf-8")
    code, out = _chat_in_a_terminal(home, tiny_model_dir)
    assert code == 1, out[-2000:]
    assert "chatcli: internal error: RuntimeError: widget handler failed (run with --debug for the traceback)" in out
    assert SECRET not in out and "locals" not in out and "Traceback" not in out
    code, out = _chat_in_a_terminal(home, tiny_model_dir, "--debug")  # a plain traceback, still no locals
    assert code == 1 and "Traceback (most recent call last)" in out and 'raise RuntimeError("widget handler failed")' in out
    assert SECRET not in out and "locals" not in out
