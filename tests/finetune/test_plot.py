"""loss.png: a matplotlib figure a person can read (axes, ticks, legend, title), one panel per metric the run has."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chatcli_finetune.plot import figure, series, smooth, write_png


def _history(n: int = 30, pairs: bool = False) -> list[dict]:
    out = []
    for s in range(1, n + 1):
        m = {"step": s, "loss": 2.0 / s, "lr": 1e-4}
        if pairs:
            m.update(accuracy=min(1.0, s / n), margin=s / 10)
        if s % 10 == 0:
            m["val_loss"] = 2.2 / s
            if pairs:
                m.update(val_accuracy=0.5, val_margin=s / 20)
        out.append(m)
    return out


def test_smooth_is_a_centred_moving_average():
    assert smooth([1.0, 2.0, 3.0]) == [1.0, 2.0, 3.0]  # under 5 points: drawn as they are
    assert smooth([0.0, 3.0, 0.0, 3.0, 0.0], window=3) == [1.5, 1.0, 2.0, 1.0, 1.5]
    line = [float(v) for v in range(100)]
    assert smooth(line)[50] == pytest.approx(50.0)  # a straight line stays where it is: no lag


def test_series_keeps_finite_numbers_only():
    h = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": float("nan")}, {"step": 3}, {"step": 4, "loss": True}]
    assert series(h, "loss") == [(1.0, 1.0)]


def test_an_sft_run_has_one_labelled_panel_with_a_legend():
    fig = figure(_history(), kind="sft", model="/models/smollm2-135m-instruct")
    [ax] = fig.axes
    assert ax.get_xlabel() == "optimizer step" and ax.get_ylabel() == "loss"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["train loss (each step)", "train loss (smoothed)", "validation loss"]
    assert [t.get_text() for t in fig.texts] == ["SFT run on smollm2-135m-instruct: 30 steps"]
    fig.canvas.draw()
    assert any(t.get_text() for t in ax.get_xticklabels()) and any(t.get_text() for t in ax.get_yticklabels())
    [_, _, val] = ax.get_lines()
    assert list(val.get_xdata()) == [10.0, 20.0, 30.0]


def test_a_reward_run_adds_accuracy_and_margin_panels(tmp_path):
    fig = figure(_history(pairs=True), kind="reward")
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "pair accuracy", "reward margin (chosen - rejected)"]
    assert fig.texts[0].get_text().startswith("Reward model run")
    path = write_png(tmp_path / "loss.png", _history(pairs=True), kind="reward")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not (tmp_path / "loss.png.tmp").exists()
    assert write_png(tmp_path / "none.png", [{"step": 1, "lr": 1e-4}]) is None


def test_rl_metrics_get_reward_and_kl_panels():
    h = [{"step": s, "loss": 1.0 / s, "reward": s * 0.1, "kl": s * 0.01} for s in range(1, 8)]
    assert [ax.get_ylabel() for ax in figure(h, kind="rl").axes] == ["loss", "reward", "KL to the base model"]


def test_importing_the_plot_module_does_not_import_matplotlib():
    code = "import sys, chatcli_finetune.plot, chatcli_finetune.run; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_step_ticks_are_whole_numbers():
    fig = figure([{"step": s, "loss": 1.0 / s} for s in range(1, 6)], kind="sft")
    fig.canvas.draw()
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert ticks and all(t.lstrip("−-").isdigit() for t in ticks), ticks
