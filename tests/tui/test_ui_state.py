"""The tint (F2) and the panel (F3 shown/hidden, F4 sampled column) survive a restart; a broken file is one warning."""

from __future__ import annotations

import json
import os

import pytest

from chatcli.paths import config_dir, ui_state_path
from chatcli.tui.ui_state import MAX_BYTES, UiState, load_ui_state, save_ui_state
from chatcli.tui.widgets.transcript import Note
from tests.fake_engine import FakeEngine
from tests.tui_support import build_app, ready, run


def test_the_file_lives_in_the_config_dir_and_round_trips(tmp_path):
    assert ui_state_path().parent == config_dir()
    path = tmp_path / "deeper" / "ui-state.json"
    assert load_ui_state(path) == (UiState(), None)  # none yet: the defaults, nothing to say
    save_ui_state(UiState(tint="entropy", panel=False, sampled=True), path)
    assert json.loads(path.read_text()) == {"tint": "entropy", "panel": False, "sampled": True}
    assert load_ui_state(path) == (UiState(tint="entropy", panel=False, sampled=True), None)
    save_ui_state(UiState(tint="off"), path)  # replaced whole, no temporary file left beside it
    assert load_ui_state(path)[0] == UiState() and os.listdir(path.parent) == ["ui-state.json"]
    path.write_text('{"tint": "model_prob", "from_a_newer_chatcli": [1, 2]}')
    assert load_ui_state(path) == (UiState(tint="model_prob"), None)  # unknown keys are ignored


@pytest.mark.parametrize("content", [
    b"{not json", b"\xff\xfe", b"[1, 2]", b'{"tint": "rainbow"}', b'{"panel": "yes"}', b'{"sampled": 1}',
    b"[" * 50_000, b'{"tint": "off", "pad": "' + b"x" * MAX_BYTES + b'"}',
])  # fmt: skip
def test_a_broken_file_is_ignored_with_one_warning(tmp_path, content):
    path = tmp_path / "ui-state.json"
    path.write_bytes(content)
    state, warning = load_ui_state(path)
    assert state == UiState() and warning is not None and "\n" not in warning and "using the defaults" in warning


def test_a_fifo_or_a_folder_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    state, warning = load_ui_state(fifo)  # a blocking open would hang here
    assert state == UiState() and "FIFO" in warning
    (tmp_path / "dir.json").mkdir()
    assert load_ui_state(tmp_path / "dir.json")[1] is not None


def test_f2_f3_f4_are_remembered_for_the_next_start(tmp_path):
    path = tmp_path / "ui-state.json"

    async def first():
        app = build_app(FakeEngine(length=3), ui_state=path)
        async with app.run_test(size=(130, 40)) as pilot:
            await ready(pilot)
            assert app.tint == "off" and app.panel.display and not app.panel.compare
            await pilot.press("f2", "f4", "f3")
            assert app.tint == "model_prob" and not app.panel.display and app.panel.compare

    async def second(**kw):
        app = build_app(FakeEngine(length=3), ui_state=path, **kw)
        async with app.run_test(size=(130, 40)) as pilot:
            await ready(pilot)
            return app.tint, app.panel.display, app.panel.compare, [n.plain for n in app.query(Note) if n.kind == "warning"]

    run(first())
    assert json.loads(path.read_text()) == {"tint": "model_prob", "panel": False, "sampled": True}
    assert run(second()) == ("model_prob", False, True, [])
    assert run(second(tint="entropy"))[0] == "entropy"  # an explicit --tint wins for that session...
    assert json.loads(path.read_text())["tint"] == "model_prob"  # ...and is not remembered unless F2 is pressed
    path.write_text("{oops")
    tint, shown, sampled, warnings = run(second())
    assert (tint, shown, sampled) == ("off", True, False) and len(warnings) == 1 and "broken" in warnings[0]


def test_tint_command_is_remembered_and_an_unwritable_file_is_one_warning(tmp_path):
    path = tmp_path / "ui-state.json"

    async def go(path):
        app = build_app(FakeEngine(length=3), ui_state=path)
        async with app.run_test(size=(130, 40)) as pilot:
            await ready(pilot)
            app.prompt.load_text("/tint entropy")
            await pilot.press("enter")
            await pilot.press("f3", "f3")
            await pilot.pause()
            return [n.plain for n in app.query(Note) if n.kind == "warning"]

    assert run(go(path)) == [] and json.loads(path.read_text())["tint"] == "entropy"
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    warnings = run(go(blocked / "ui-state.json"))  # its folder cannot be made: said once, the chat goes on
    assert len(warnings) == 1 and "could not be saved" in warnings[0]
