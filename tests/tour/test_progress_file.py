"""The tour's progress file: round trip, atomic writes, and a broken file that starts over with one warning."""

from __future__ import annotations

import json
import os

import pytest

from chatcli import paths
from chatcli.tour.progress_file import TourProgress, load_progress, save_progress


def test_round_trip(tmp_path):
    path = tmp_path / "tour.json"
    progress = TourProgress(current=4, met={1: {"near", "wide"}, 4: {"turns"}}, done={1})
    save_progress(progress, path)
    loaded, warning = load_progress(path, 9)
    assert warning is None
    assert loaded == progress
    assert json.loads(path.read_text())["chapters"]["4"] == {"met": ["turns"], "done": False}


def test_missing_file_is_a_fresh_start_without_warning(tmp_path):
    assert load_progress(tmp_path / "none.json", 9) == (TourProgress(), None)


@pytest.mark.parametrize("content", [
    b"{not json", b"\xff\xfe", b"[1, 2]", b'{"current": 0}', b'{"current": 12}', b'{"current": true}',
    b'{"current": 2, "chapters": {"x": {}}}', b'{"current": 2, "chapters": {"1": {"met": "near"}}}',
    b'{"current": 2, "chapters": []}', b"[" * 100_000, b" " * 70_000,
])  # fmt: skip
def test_a_broken_file_is_one_warning_and_a_fresh_start(tmp_path, content):
    path = tmp_path / "tour.json"
    path.write_bytes(content)
    progress, warning = load_progress(path, 9)
    assert progress == TourProgress()
    assert warning is not None and "\n" not in warning and "starting the tour over" in warning


def test_a_directory_or_fifo_is_refused_not_waited_on(tmp_path):
    (tmp_path / "dir.json").mkdir()
    assert "not read" in load_progress(tmp_path / "dir.json", 9)[1]
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.json")
        assert "not read" in load_progress(tmp_path / "fifo.json", 9)[1]


def test_chapters_this_version_lacks_are_dropped(tmp_path):
    path = tmp_path / "tour.json"
    path.write_text(json.dumps({"version": 1, "current": 2, "chapters": {"12": {"met": ["a"], "done": True}}}))
    assert load_progress(path, 9) == (TourProgress(current=2), None)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "tour.json"
    save_progress(TourProgress(current=3), path)

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(paths.os, "fsync", broken_fsync)  # the one atomic writer, chatcli.paths
    with pytest.raises(OSError):
        save_progress(TourProgress(current=5), path)
    assert load_progress(path, 9)[0].current == 3
    assert [p.name for p in tmp_path.iterdir()] == ["tour.json"]
