"""The model-loading worker's body and the SIGHUP handler, without a running app."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from chatcli.errors import ChatcliError
from chatcli.tui.loading import load_engine
from chatcli.tui.messages import EngineFailed, EngineLoaded, LoadProgress


def test_load_engine_posts_throttled_progress_then_the_engine():
    posted = []
    engine = object()

    def factory(progress):
        for done in range(1000):  # far faster than 20 updates a second
            progress("weights", done, 1000)
        progress("weights", 1000, 1000)  # the end of a stage always shows
        return engine

    load_engine(factory, posted.append)
    progress = [m for m in posted if isinstance(m, LoadProgress)]
    assert 2 <= len(progress) < 10
    assert (progress[-1].done, progress[-1].total) == (1000, 1000)
    assert isinstance(posted[-1], EngineLoaded) and posted[-1].engine is engine


def test_load_engine_reports_a_failure_and_a_loader_bug_as_one_line():
    def refused(progress):
        raise ChatcliError("no model at /nowhere")

    def buggy(progress):
        raise KeyError("layers")

    posted = []
    load_engine(refused, posted.append)
    load_engine(buggy, posted.append)
    assert [type(m) for m in posted] == [EngineFailed, EngineFailed]
    assert posted[0].error == "no model at /nowhere" and posted[1].error == "KeyError: 'layers'"


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_sighup_runs_stop_then_exits_and_restore_puts_the_old_handler_back(tmp_path):
    marker = tmp_path / "stopped"
    script = textwrap.dedent(f"""
        import os, signal
        from chatcli.tui.hangup import install_hangup

        old = signal.getsignal(signal.SIGHUP)
        restore = install_hangup(lambda: print("unused"))
        assert signal.getsignal(signal.SIGHUP) is not old
        restore()
        assert signal.getsignal(signal.SIGHUP) is old
        install_hangup(lambda: open({str(marker)!r}, "w").write("saved"))
        os.kill(os.getpid(), signal.SIGHUP)
        print("not reached")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 128 + 1, done.stderr  # 128 + SIGHUP, the shell's convention
    assert marker.read_text() == "saved" and "not reached" not in done.stdout
