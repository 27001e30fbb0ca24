"""Plain mode: scripted stdin (one message per line), interactive prompt, Ctrl+C stopping an answer."""

from __future__ import annotations

import _thread
import io
import threading

from rich.console import Console

from chatcli.engine.params import SamplingParams
from chatcli.chat.repl import run_repl
from chatcli.chat.store import Store
from tests.fake_engine import FakeEngine, fake_factory


def _consoles(tty: bool = False):
    out, err = io.StringIO(), io.StringIO()
    return out, err, Console(file=out, force_terminal=tty, width=100, highlight=False), Console(file=err, width=100)


def test_scripted_stdin_prints_one_answer_per_line(tmp_path, monkeypatch, capsys):
    engine = FakeEngine(length=6)
    store = Store.open(tmp_path / "h.db")
    _, err, console, errc = _consoles()
    stdin = io.StringIO("hello\n\n/set temperature 0\nsecond line\n//slash message\n")
    rc = run_repl(fake_factory(engine), store=store, params=SamplingParams(seed=1), stdin=stdin, console=console,
                  err=errc, interactive=False, progress_enabled=False)
    assert rc == 0
    printed = capsys.readouterr().out
    conv = store.load(store.latest_id())
    answers = [n for n in conv.path() if n.role == "assistant"]
    assert len(answers) == 3  # the empty line sent nothing
    assert printed == "".join(a.content + ("" if a.content.endswith("\n") else "\n") for a in answers)
    assert [n.content for n in conv.path() if n.role == "user"] == ["hello", "second line", "/slash message"]
    assert engine.calls[1]["params"].temperature == 0
    assert "temperature = 0" in err.getvalue()


def test_scripted_errors_set_the_exit_code(capsys):
    _, err, console, errc = _consoles()
    stdin = io.StringIO("/set temperature hot\nhi\n")
    rc = run_repl(fake_factory(FakeEngine(length=3)), stdin=stdin, console=console, err=errc, interactive=False,
                  progress_enabled=False)
    assert rc == 1 and "invalid temperature 'hot'" in err.getvalue()
    assert capsys.readouterr().out.strip()  # the message after the bad command was still answered
    _, err, console, errc = _consoles()
    rc = run_repl(fake_factory(FakeEngine(fail_after=2)), stdin=io.StringIO("boom\n"), console=console, err=errc,
                  interactive=False, progress_enabled=False)
    assert rc == 1 and "NaN" in err.getvalue()


def test_interactive_commands_tint_quit_and_continuation(monkeypatch):
    lines = iter(["/help", "first part\\", "second part", "/tint entropy", "/model", "/quit", "never read"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    out, _, console, errc = _consoles(tty=True)
    engine = FakeEngine(length=5)
    rc = run_repl(fake_factory(engine), stdin=io.StringIO(), console=console, err=errc, interactive=True,
                  progress_enabled=False)
    text = out.getvalue()
    assert rc == 0
    assert "/continue" in text and "fake-tiny" in text and "tint: entropy" in text
    assert engine.calls[0]["messages"][-1]["content"] == "first part\nsecond part"
    assert "\x1b[" in text  # tokens are coloured on a terminal
    assert next(lines) == "never read"


def test_ctrl_c_stops_the_answer_not_the_repl(monkeypatch):
    engine = FakeEngine(length=100000, delay=0.001)
    engine.hold_at = 15
    lines = iter(["go on and on", "/continue", "/quit"])

    def fake_input(prompt=""):
        line = next(lines)
        if line == "go on and on":
            def interrupt():
                engine.started.wait(5)
                while len(engine.calls) < 1:
                    pass
                import time

                time.sleep(0.3)  # the answer is streaming (held at 15 tokens)
                _thread.interrupt_main()  # what Ctrl+C does

            threading.Thread(target=interrupt, daemon=True).start()
        elif line == "/continue":
            engine.hold_at = None
            engine.length = 20
        return line

    monkeypatch.setattr("builtins.input", fake_input)
    out, _, console, errc = _consoles(tty=True)
    rc = run_repl(fake_factory(engine), stdin=io.StringIO(), console=console, err=errc, interactive=True,
                  progress_enabled=False)
    assert rc == 0
    assert "stopped" in out.getvalue()
    assert len(engine.calls) == 2 and len(engine.calls[1]["prefix"]) == 15  # /continue after the 15 kept tokens


def test_resume_prints_the_conversation(tmp_path):
    store = Store.open(tmp_path / "h.db")
    run_repl(fake_factory(FakeEngine(length=4)), store=store, stdin=io.StringIO("remember me\n"), console=_consoles()[2],
             err=_consoles()[3], interactive=False, progress_enabled=False)
    out, _, console, errc = _consoles()
    rc = run_repl(fake_factory(FakeEngine(length=4)), store=Store.open(tmp_path / "h.db"), resume="latest",
                  stdin=io.StringIO(""), console=console, err=errc, interactive=False, progress_enabled=False)
    assert rc == 0 and "remember me" in out.getvalue()
    _, err, console, errc = _consoles()
    rc = run_repl(fake_factory(FakeEngine()), store=Store.open(tmp_path / "h.db"), resume="42", stdin=io.StringIO(""),
                  console=console, err=errc, interactive=False, progress_enabled=False)
    assert rc == 2 and "no conversation 42" in err.getvalue()
