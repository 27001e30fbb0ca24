"""The live curves screen (/finetune plot, F8 while a run goes): incremental reads, sparklines, a Pilot redraw."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from textual.app import App

from chatcli.errors import UsageError
from chatcli_finetune import command
from chatcli_finetune.live_plot import LivePlotScreen, MetricsTail, render, sparkline
from tests.tui_support import run, wait_for


def _line(step: int, **extra) -> str:
    return json.dumps({"step": step, "loss": 2.0 / step, "lr": 1e-4, **extra}) + "\n"


def test_the_tail_reads_only_new_complete_lines_and_rereads_a_truncated_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read() == []  # not there yet
    path.write_text(_line(1) + _line(2) + '{"step": 3, "lo')  # the third line is still being written
    assert [m["step"] for m in tail.read()] == [1, 2]
    with path.open("a") as f:
        f.write('ss": 0.5}\n' + "not json\n")
    assert [m["step"] for m in tail.read()] == [1, 2, 3]
    path.write_text(_line(1))  # --resume truncated it
    assert [m["step"] for m in tail.read()] == [1]


def test_sparkline_scales_low_to_high_and_buckets_to_the_width():
    assert sparkline([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], 8) == "▁▂▃▄▅▆▇█"
    assert sparkline([1.0, 1.0], 5) == "▁▁"  # flat: the bottom row
    assert sparkline([0.0, 0.0, 10.0, 10.0], 2) == "▁█"  # two buckets of two
    assert sparkline([], 5) == "" and sparkline([float("nan")], 5) == ""


def test_render_draws_the_loss_chart_and_a_sparkline_per_metric():
    rows = [json.loads(_line(s, accuracy=s / 10, **({"val_loss": 1.0, "val_accuracy": 0.5} if s == 10 else {})))
            for s in range(1, 11)]  # fmt: skip
    text = render(rows, 80)
    assert "• train" in text and "o validation" in text and "step 10" in text
    assert "  accuracy ▁" in text and "1 (val 0.5)" in text and "        lr " in text
    assert "grad norm" not in text and "reward" not in text  # only what the run logs
    assert render([], 80) == "waiting for the first step…"


class _Host(App):
    def __init__(self, screen: LivePlotScreen) -> None:
        super().__init__()
        self.plot = screen
        self.closed = False

    def on_mount(self) -> None:
        self.push_screen(self.plot, callback=lambda _: setattr(self, "closed", True))


def test_the_screen_redraws_every_second_from_metrics_jsonl(tmp_path):
    out = tmp_path / "run"
    out.mkdir()

    async def go():
        app = _Host(LivePlotScreen(out, status=lambda: "finetune sft: step 2/40"))
        async with app.run_test(size=(100, 40)) as pilot:
            chart = app.plot.query_one("#plot-chart")
            head = app.plot.query_one("#plot-head")
            assert "waiting for the first step" in str(chart.render())
            assert "finetune sft: step 2/40" in str(head.render()) and "Esc closes" in str(head.render())
            (out / "metrics.jsonl").write_text(_line(1) + _line(2, val_loss=1.5))
            await wait_for(pilot, lambda: "• train" in str(chart.render()), timeout=5, what="a redraw")
            assert "2 step(s)" in str(head.render())
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.closed, what="the screen to close")

    run(go())


def _ctx(screens: bool = True):
    pushed: list = []
    return SimpleNamespace(frontend=SimpleNamespace(screens=screens), push_screen=lambda s, cb=None: pushed.append(s), pushed=pushed)


def test_finetune_plot_opens_a_folder_or_the_sessions_run_and_refuses_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(command._RUN, "current", None)
    ctx = _ctx()
    with pytest.raises(UsageError, match="no fine-tuning run in this session"):
        command.finetune_command(ctx, "plot")
    with pytest.raises(UsageError, match="no fine-tuning run folder at"):
        command.finetune_command(ctx, f"plot {tmp_path / 'missing'}")
    command.finetune_command(ctx, f"plot {tmp_path}")
    [screen] = ctx.pushed
    assert isinstance(screen, LivePlotScreen) and screen.out == Path(tmp_path) and screen.status is None
    with pytest.raises(UsageError, match="needs the full-screen chat.*chatcli finetune report DIR"):
        command.finetune_command(_ctx(screens=False), f"plot {tmp_path}")
    session = SimpleNamespace(proc=object(), out=tmp_path / "sft-1", kind="sft", status_line=lambda: "step 1")
    monkeypatch.setitem(command._RUN, "current", session)
    screen = command.plot_screen(ctx)
    assert screen.out == tmp_path / "sft-1" and screen.status() == "step 1"
