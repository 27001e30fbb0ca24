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


def test_input_that_is_not_utf8_is_replaced_and_the_chat_goes_on(tmp_path):
    # Piped bytes that are not UTF-8: with the store the message used to fail to save, without it
    # every later turn failed in the tokenizer. Each bad byte becomes U+FFFD, with a warning.
    for store in (Store.open(tmp_path / "h.db"), None):
        engine = FakeEngine(length=3)
        stdin = io.TextIOWrapper(io.BytesIO(b"caf\xe9 au lait\nsecond\n"), encoding="utf-8")  # strict decoding
        _, err, console, errc = _consoles()
        rc = run_repl(fake_factory(engine), store=store, stdin=stdin, console=console, err=errc, interactive=False,
                      progress_enabled=False)
        assert rc == 0 and "not valid UTF-8" in err.getvalue()
        sent = [c["messages"][-1]["content"] for c in engine.calls]
        assert sent == ["caf\ufffd au lait", "second"]
        if store is not None:
            saved = store.load(store.latest_id())
            assert [n.content for n in saved.path() if n.role == "user"] == sent


def test_lone_surrogates_in_a_line_are_replaced(tmp_path):
    # What a stream read with surrogateescape (a C locale) or a broken "\ud83d" hands over.
    engine = FakeEngine(length=3)
    store = Store.open(tmp_path / "h.db")
    _, err, console, errc = _consoles()
    rc = run_repl(fake_factory(engine), store=store, stdin=io.StringIO("caf\udce9 \ud83d\nok\n"), console=console,
                  err=errc, interactive=False, progress_enabled=False)
    assert rc == 0 and [c["messages"][-1]["content"] for c in engine.calls] == ["caf\ufffd \ufffd", "ok"]


def test_set_seed_out_of_range_is_one_line_and_keeps_the_old_seed():
    engine = FakeEngine(length=3)
    _, err, console, errc = _consoles()
    rc = run_repl(fake_factory(engine), params=SamplingParams(seed=5), stdin=io.StringIO(f"/set seed {10**23}\nhi\n"),
                  console=console, err=errc, interactive=False, progress_enabled=False)
    assert rc == 1  # the refused command counts as a failure in scripted mode
    assert "invalid seed" in err.getvalue() and "2**64" in err.getvalue()
    assert engine.calls[0]["params"].seed == 5


def test_a_slash_command_that_crashes_is_one_line_and_the_chat_goes_on(tmp_path, tiny_model_dir, monkeypatch, capsys):
    # A broken adapter that /load-lora did not expect (an adapter config with target_modules: 5 raised
    # TypeError) ended the REPL with a traceback. Any exception from a command is now one line.
    import json

    import torch
    from safetensors.torch import save_file

    from chatcli.engine.loader import load_engine

    adapter = tmp_path / "lora"
    adapter.mkdir()
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_{}.weight"
    save_file({key.format("A"): torch.zeros(4, 64), key.format("B"): torch.zeros(64, 4)},
              str(adapter / "adapter_model.safetensors"))
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                             "target_modules": ["q_proj"]}))
    engine = load_engine(str(tiny_model_dir))

    def unexpected(*args, **kwargs):
        raise TypeError("'int' object is not\niterable")

    monkeypatch.setattr(engine.adapters, "load", unexpected)  # stands for any bug a broken file can reach
    out, err, console, errc = _consoles()
    stdin = io.StringIO(f"/load-lora {adapter}\nstill here?\n")
    rc = run_repl(lambda progress: engine, stdin=stdin, console=console, err=errc,
                  params=SamplingParams(max_tokens=3, seed=1), interactive=False, progress_enabled=False)
    assert rc == 1
    assert err.getvalue().splitlines() == ["error: /load-lora failed (TypeError: 'int' object is not iterable)"]
    assert capsys.readouterr().out.strip()  # the message after the command was answered
