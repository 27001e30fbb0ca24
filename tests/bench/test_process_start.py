"""The start figure is timed to a child's first output (its first token), not to its exit."""

from __future__ import annotations

import sys

import pytest

from chatcli.bench.process_start import run_child


def test_timed_to_the_first_output_not_to_the_exit():
    seconds, rss = run_child([sys.executable, "-c", "import time; print('tok', flush=True); time.sleep(4)"])
    assert seconds < 4 and rss > 0  # the 4 s after the token are not counted; the RSS waits for the exit


def test_a_child_that_prints_nothing_is_timed_to_its_exit():
    seconds, _ = run_child([sys.executable, "-c", "import time; time.sleep(0.5)"])
    assert seconds >= 0.5


def test_a_large_output_does_not_stall_the_child():
    seconds, _ = run_child([sys.executable, "-c", "import sys; sys.stdout.write('x' * 1000000)"])
    assert seconds < 60


def test_a_failing_child_is_one_line():
    with pytest.raises(RuntimeError, match="exit 3: boom"):
        run_child([sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"])
