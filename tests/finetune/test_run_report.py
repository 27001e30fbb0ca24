"""`chatcli finetune report DIR`: the metrics table, the settings and the "what changed" report of a run folder."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from chatcli_finetune.cli import finetune_app
from chatcli_finetune.run_report import columns, load_report, shown_rows

WHAT_CHANGED = {"kind": "reward", "split": "validation", "pairs": {"pairs": 2, "accuracy": 1.0, "margin": 0.75},
                "verdict": "changed", "advice": None}  # fmt: skip


def _folder(tmp_path, steps: int = 6, what_changed: dict | None = WHAT_CHANGED):
    out = tmp_path / "rm"
    out.mkdir()
    (out / "training_args.json").write_text(json.dumps({"kind": "reward", "data": "prefs [1].jsonl", "lr": 0.0001, "rank": 8}))
    lines = []
    for s in range(1, steps + 1):
        m = {"step": s, "total_steps": steps, "epoch": s / 3, "loss": 0.7 / s, "lr": 1e-4, "accuracy": 0.5 + s / 20,
             "margin": s / 10, "grad_norm": 1.0 / s, "tokens": 40, "tokens_per_s": 100.0, "eta_s": 1.0}  # fmt: skip
        if s % 3 == 0:
            m.update(val_loss=0.8 / s, val_accuracy=0.5, val_margin=0.1)
        lines.append(json.dumps(m))
    lines.insert(2, "{not json")
    (out / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps({"status": "finished", "steps": steps, "total_steps": steps,
                                                  "final_loss": 0.7 / steps, "val_loss": 0.1, "elapsed_s": 3.5}))  # fmt: skip
    (out / "data_split.json").write_text(json.dumps({"train_lines": [1, 2, 3, 4], "val_lines": [5], "train_pairs": [],
                                                     "val_pairs": []}))  # fmt: skip
    if what_changed is not None:
        (out / "what_changed.json").write_text(json.dumps(what_changed))
    return out


def test_the_report_prints_settings_metrics_and_what_changed(tmp_path):
    out = _folder(tmp_path)
    r = CliRunner().invoke(finetune_app, ["report", str(out)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    text = r.output
    assert "settings" in text and "prefs [1].jsonl" in text  # brackets print as text
    assert "summary: finished after 6 of 6 steps, final loss 0.1167, val loss 0.1, seconds 3.5" in text
    assert "data: 4 training / 1 held-out examples" in text
    lines = text.splitlines()
    k = next(i for i, line in enumerate(lines) if line.strip().startswith("step"))
    # Headers stack their words (val_loss -> "val" over "loss") so a dozen columns fit 80 characters.
    assert lines[k].split() == ["step", "epoch", "loss", "loss", "lr", "accuracy", "norm", "margin", "s", "accuracy", "margin"]
    assert lines[k - 1].split() == ["val", "grad", "per", "val", "val"] and lines[k - 2].split() == ["tokens"]
    assert lines[k + 3].split() == ["3", "1", "0.2333", "0.2667", "0.0001", "0.65", "0.3333", "0.3", "100", "0.5", "0.1"]
    assert "1 unreadable line(s) of metrics.jsonl skipped" in text
    assert "what changed:" in text and "pair accuracy 1.00 (chance 0.50)" in text


def test_json_holds_every_part(tmp_path):
    out = _folder(tmp_path)
    r = CliRunner().invoke(finetune_app, ["report", str(out), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["settings"]["kind"] == "reward" and len(data["metrics"]) == 6 and data["unreadable_metrics_lines"] == 1
    assert data["split"] == {"train": 4, "held_out": 1} and data["what_changed"]["verdict"] == "changed"
    assert data["columns"][:5] == ["step", "epoch", "loss", "val_loss", "lr"]


def test_long_runs_show_spaced_steps_every_validation_and_the_last():
    metrics = [{"step": s, "loss": 1.0, **({"val_loss": 1.0} if s % 37 == 0 else {})} for s in range(1, 201)]
    steps = [m["step"] for m in shown_rows(metrics)]
    assert steps[0] == 1 and steps[-1] == 200 and {37, 74, 111, 148, 185} <= set(steps)
    assert len(steps) <= 25 + 5 + 1
    assert len(shown_rows(metrics, all_steps=True)) == 200
    assert columns([{"step": 1, "loss": 1.0, "flag": True, "note": "x", "eta_s": 3.0}]) == ["step", "loss"]


def test_an_unknown_what_changed_format_falls_back_to_its_verdict(tmp_path):
    out = _folder(tmp_path, what_changed={"verdict": "nothing", "advice": "try more steps"})
    r = CliRunner().invoke(finetune_app, ["report", str(out)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "verdict: nothing" in r.output and "try more steps" in r.output


def test_a_run_still_writing_and_bad_folders(tmp_path):
    from chatcli.errors import UsageError

    running = tmp_path / "running"
    running.mkdir()
    (running / "training_args.json").write_text(json.dumps({"kind": "sft"}))
    data = load_report(running)
    assert data["metrics"] == [] and data["summary"] is None and data["what_changed"] is None
    r = CliRunner().invoke(finetune_app, ["report", str(running)])
    assert r.exit_code == 0 and "metrics: none yet" in r.output
    for folder, match in ((tmp_path / "missing", "no run folder at"), (tmp_path, "is not a fine-tuning run folder")):
        try:
            load_report(folder)
        except UsageError as e:
            assert match in e.message and "\n" not in e.message
        else:
            raise AssertionError(f"{folder} was reported")
    (running / "summary.json").write_text("{broken")
    try:
        load_report(running)
    except UsageError as e:
        assert "summary.json cannot be read" in e.message
    else:
        raise AssertionError("a broken summary.json was read")
