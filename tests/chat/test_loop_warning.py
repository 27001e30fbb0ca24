"""The plain REPL on a model that loops: the answer as it was, then one warning line with the /set fix."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from chatcli.chat.repl import run_repl
from chatcli.engine.loader import load_engine
from chatcli.engine.params import SamplingParams
from tests.looping import make_looping_checkpoint

UNIT = "Romeadddaygreick"


@pytest.fixture(scope="module")
def looping_dir(tmp_path_factory):
    return make_looping_checkpoint(tmp_path_factory.mktemp("looping"))


def repl(looping_dir, lines: str, *, tty: bool, params: SamplingParams) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    console = Console(file=out, force_terminal=tty, width=100, highlight=False)
    errc = Console(file=err, width=100)
    engine = load_engine(str(looping_dir))
    rc = run_repl(lambda progress: engine, stdin=io.StringIO(lines), console=console, err=errc, interactive=False,
                  progress_enabled=False, params=params)
    return rc, out.getvalue(), err.getvalue()


def warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if "repeats itself" in line]


def test_a_looping_answer_is_printed_whole_then_one_warning_line(looping_dir, capsys):
    rc, _, err = repl(looping_dir, "hi\n", tty=False, params=SamplingParams(temperature=0, max_tokens=20))
    assert rc == 0
    assert capsys.readouterr().out == UNIT * 4 + "\n"  # scripted mode prints the bare text to stdout
    [line] = warnings(err)
    assert line == (f'the answer repeats itself: "{UNIT}" ×3 from token 1; greedy decoding loops easily: '
                    "/set temperature 0.7 samples instead, or /set repetition_penalty 1.2 makes repeated tokens less likely")


def test_each_looping_answer_is_warned_once_and_the_advice_follows_the_settings(looping_dir, capsys):
    lines = "hi\n/set repetition_penalty 1.2\nagain\n"
    rc, _, err = repl(looping_dir, lines, tty=False, params=SamplingParams(temperature=0.7, seed=1, max_tokens=20))
    assert rc == 0
    first, second = warnings(err)
    assert first.endswith("; /set repetition_penalty 1.2 makes repeated tokens less likely")
    assert second.endswith("; /set repetition_penalty 1.3 makes repeated tokens less likely")  # still looping: more


def test_interactively_the_warning_follows_the_answer_and_never_cuts_into_it(looping_dir, monkeypatch):
    lines = iter(["hi", "/quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    screen = io.StringIO()  # the answer (stdout) and the warning (stderr) on one terminal
    console = Console(file=screen, force_terminal=True, width=200, highlight=False, color_system=None)
    engine = load_engine(str(looping_dir))
    rc = run_repl(lambda progress: engine, stdin=io.StringIO(), console=console, err=console, interactive=True,
                  progress_enabled=False, params=SamplingParams(temperature=0, max_tokens=20))
    assert rc == 0
    text = screen.getvalue()
    answer_at = text.index(UNIT * 4 + "\n")  # the answer's text in one piece
    warning_at = text.index("the answer repeats itself")
    assert warning_at > answer_at and text.count("repeats itself") == 1
