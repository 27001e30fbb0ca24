"""Fine-tuning progress in the chat's status bar (the ``status_item`` plugin hook) and F8 hot-load."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from chatcli.plugins.manager import PluginManager
from chatcli_finetune import command
from chatcli_finetune.background import BackgroundRun
from tests.fake_engine import FakeEngine
from tests.tui_support import build_app, ready, run, screen_text, wait_for

PLUGIN = '''
from chatcli.chat.commands import Arg
from chatcli.plugins.hookspecs import hookimpl

STATE = {"text": None, "offer": None, "loaded": []}


@hookimpl
def status_item():
    if STATE["offer"]:
        return (STATE["text"], STATE["offer"])
    return STATE["text"]


def _load(ctx, args=None):
    STATE["loaded"].append(args)
    STATE["offer"] = None
    STATE["text"] = None
    ctx.say("loaded it", "result")


@hookimpl
def register_commands(register):
    register("trained", _load, "load what was trained", args=(Arg("args", "text", optional=True),))
'''

BROKEN = '''
from chatcli.plugins.hookspecs import hookimpl


@hookimpl
def status_item():
    raise RuntimeError("boom")
'''


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv("CHATCLI_PLUGINS", raising=False)
    monkeypatch.setattr(command, "_RUN", {"current": None})
    yield
    for name in [n for n in sys.modules if n.startswith("chatcli_user_plugins.")]:
        del sys.modules[name]


def _manager(tmp_path: Path, **files: str) -> tuple[PluginManager, list[str]]:
    folder = tmp_path / "user_plugins"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.py").write_text(text)
    problems: list[str] = []
    return PluginManager(entry_points=[], user_dir=folder, report=problems.append, selection=None).load(), problems


def test_status_items_collect_text_and_offers_and_switch_off_a_raising_plugin(tmp_path):
    m, problems = _manager(tmp_path, offer=PLUGIN, broken=BROKEN)
    state = sys.modules["chatcli_user_plugins.offer"].STATE
    assert m.status_items() == [] and "raised in status_item (RuntimeError: boom)" in problems[0]
    assert m.infos["broken"].status == "error"
    state["text"] = "training: step 3/10"
    assert m.status_items() == [("training: step 3/10", None)]
    state["offer"] = "/trained now"
    assert m.status_items() == [("training: step 3/10", "/trained now")]
    assert len(problems) == 1  # the broken plugin was switched off, not asked again


def _run_in_state(tmp_path, argv, **attrs) -> BackgroundRun:
    run_ = BackgroundRun("sft", tmp_path / "d.jsonl", tmp_path / "out")
    run_.proc = subprocess.Popen(argv)
    for k, v in attrs.items():
        setattr(run_, k, v)
    return run_


def test_finetune_status_item_follows_the_run(tmp_path):
    assert command.status_item() is None
    running = _run_in_state(tmp_path, [sys.executable, "-c", "import time; time.sleep(30)"],
                            last={"step": 3, "total_steps": 10, "loss": 1.25, "tokens_per_s": 40.0, "eta_s": 75})  # fmt: skip
    command._RUN["current"] = running
    try:
        text, offer = command.status_item()
        assert text == "finetune sft: step 3/10 loss 1.250 40 tok/s ETA 1:15 (answers slower meanwhile)"
        assert offer == "/finetune plot"  # F8 opens the live curves
    finally:
        running.proc.kill()
        running.proc.wait()
    done = _run_in_state(tmp_path, [sys.executable, "-c", "pass"], summary={"status": "finished", "final_loss": 0.5})
    done.proc.wait()
    command._RUN["current"] = done
    text, offer = command.status_item()
    assert (text, offer) == ("finetune sft: done, loss 0.500 -> out", "/finetune load")
    done.auto_load = True  # --load: loading by itself, nothing to offer
    assert command.status_item() == "finetune sft: done, loading out"
    done.loaded = True
    assert command.status_item() is None  # loaded: nothing left to offer
    failed = _run_in_state(tmp_path, [sys.executable, "-c", "raise SystemExit(3)"], errors=["chatcli: error: bad data"])
    failed.proc.wait()
    failed.ended_at = time.monotonic()
    command._RUN["current"] = failed
    assert command.status_item() == "finetune sft: failed (exit 3) chatcli: error: bad data"
    failed.ended_at -= 120  # a failure is shown for a minute, then the bar is clean again
    assert command.status_item() is None


def test_status_bar_shows_plugin_progress_and_f8_runs_the_offer(tmp_path):
    m, problems = _manager(tmp_path, offer=PLUGIN)
    state = sys.modules["chatcli_user_plugins.offer"].STATE

    async def go():
        app = build_app(FakeEngine(length=3), plugins=m)  # the app builds its registry and bar from the manager
        async with app.run_test(size=(160, 30)) as pilot:
            await ready(pilot)
            await pilot.press("f8")  # nothing offered: a hint, nothing runs
            await pilot.pause()
            assert state["loaded"] == []
            state["text"] = "finetune sft: step 3/10 loss 1.250"
            await wait_for(pilot, lambda: "step 3/10" in screen_text(app), timeout=5, what="the progress in the bar")
            assert "F8" not in screen_text(app).splitlines()[-2]
            state["text"], state["offer"] = "finetune sft: done", "/trained"
            await wait_for(pilot, lambda: app.status.info.action == "/trained", timeout=5, what="the offer")
            await pilot.pause()
            bar = screen_text(app).splitlines()[-2]
            assert "finetune sft: done" in bar and "F8 /trained" in bar
            assert any("F8 runs /trained" in str(n.message) for n in app._notifications)
            await pilot.press("f8")
            await wait_for(pilot, lambda: state["loaded"] == [None], timeout=5, what="F8 to run the offer")
            await wait_for(pilot, lambda: not app.status.info.plugin, timeout=5, what="the bar to clear")
            assert "finetune sft" not in screen_text(app)

    run(go())
    assert not problems


def test_a_real_background_run_in_the_chat_ends_with_f8_loading_the_adapter(tiny_model_dir, tmp_path):
    from chatcli.engine.loader import load_engine
    from chatcli.engine.params import SamplingParams
    from chatcli.tui.app import make_app
    from tests.tui_support import send, until_idle

    m = PluginManager(selection={"finetune"}).load()  # the first-party plugin, by its entry point
    engine = load_engine(str(tiny_model_dir), device="cpu")
    out = tmp_path / "run"

    async def go():
        app = make_app(lambda progress: engine, plugins=m, params=SamplingParams(temperature=0, max_tokens=8))
        async with app.run_test(size=(180, 30)) as pilot:
            await ready(pilot)
            await send(pilot, "Where is the fox?")
            await until_idle(pilot)
            await send(pilot, f"/finetune sft --out {out} --max-steps 4 --rank 2 --val-split 0 --save-every 100")
            await wait_for(pilot, lambda: app.status.info.plugin.startswith("finetune sft"), timeout=10, what="the run in the bar")
            await wait_for(pilot, lambda: app.status.info.action == "/finetune load", timeout=120, what="the run to finish")
            await pilot.pause()
            assert "finetune sft: done, loss" in screen_text(app) and "-> run  F8 /finetune load" in screen_text(app)
            assert "adapters none" in str(app.status.query_one("#status-left").render())
            await pilot.press("f8")
            await wait_for(pilot, lambda: "lora: run" in str(app.status.query_one("#status-left").render()), timeout=10,
                           what="the adapter in the bar")  # fmt: skip
            await wait_for(pilot, lambda: not app.status.info.plugin, timeout=5, what="the offer to go")
            assert engine.adapters.names == ["run"]

    run(go())
    assert (out / "adapter_model.safetensors").is_file()
