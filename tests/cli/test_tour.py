"""``chatcli tour`` through the real CLI: --list with ✓, --chapter/--reset, and a piped run of chapter 4 on a tiny model."""

from __future__ import annotations

import json

import pytest

from tests.cli.test_chat import chatcli


def _progress(home):
    return json.loads((home / "data" / "tour.json").read_text())


def test_list_marks_done_chapters_and_the_current_one(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tour.json").write_text(json.dumps(
        {"version": 1, "current": 3, "chapters": {"1": {"met": ["near", "wide"], "done": True}, "3": {"met": ["number"]}}}))
    r = chatcli("tour", "--list", home=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "✓" in lines[0] and "A prediction is a distribution" in lines[0]
    assert lines[2].lstrip().startswith("▸ 3") and "✓" not in lines[2]
    assert "1 of 9 chapters done; `chatcli tour` opens chapter 3" in r.stdout
    assert _progress(tmp_path)["current"] == 3  # listing changes nothing


def test_a_broken_progress_file_is_one_warning_and_reset_starts_over(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tour.json").write_text("{broken")
    r = chatcli("tour", "--list", home=tmp_path)
    assert r.returncode == 0
    assert r.stderr.count("\n") == 1 and "starting the tour over" in r.stderr
    assert "▸ 1" in r.stdout
    r = chatcli("tour", "--reset", "--list", home=tmp_path)
    assert r.returncode == 0 and r.stderr == "" and _progress(tmp_path)["current"] == 1


@pytest.mark.parametrize("args", [("--chapter", "0"), ("--chapter", "10")])
def test_a_chapter_out_of_range_is_a_usage_error_and_writes_nothing(tmp_path, args):
    r = chatcli("tour", *args, home=tmp_path)
    assert r.returncode == 2 and r.stderr == f"chatcli: error: no chapter {args[1]}: the tour has chapters 1 to 9\n"
    assert not (tmp_path / "data" / "tour.json").exists()


def test_piped_tour_runs_chapter_4_and_keeps_the_progress(tiny_model_dir, tmp_path):
    stdin = "My name is Ada.\nWhat is my name?\n/raw\n/tour next\n"
    r = chatcli("tour", "--chapter", "4", "--model", str(tiny_model_dir), "-t", "0", "-n", "6", stdin=stdin, home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Tour 4/9 · A conversation is one long text" in r.stdout  # opened at start
    assert "tour ✓ a second turn answered" in r.stderr and "tour ✓ /raw" in r.stderr
    assert "tour ✓ chapter 4 done" in r.stderr
    assert "Tour 5/9 · Pretraining, then instruction tuning" in r.stdout  # /tour next
    saved = _progress(tmp_path)
    assert saved["current"] == 5 and saved["chapters"]["4"] == {"met": ["raw", "turns"], "done": True}
    again = chatcli("tour", "--list", home=tmp_path)
    assert "▸ 5" in again.stdout and "1 of 9 chapters done" in again.stdout


def test_chat_has_tour_off_until_asked(tiny_model_dir, tmp_path):
    r = chatcli("chat", "--model", str(tiny_model_dir), "-t", "0", "-n", "4", stdin="hi\n/raw\n/tour\n", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "tour ✓" not in r.stderr  # /raw before /tour counts for nothing
    assert "Tour 1/9 · A prediction is a distribution" in r.stdout


def test_without_a_data_folder_the_tour_lasts_the_session_and_says_so_once(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "data").write_text("")  # the data folder cannot be made
    r = chatcli("tour", "--list", home=home)
    assert r.returncode == 0 and "▸ 1" in r.stdout
    assert r.stderr.count("\n") == 1 and "cannot be kept (no data folder" in r.stderr
