"""``/finetune`` from the chat: a background process on the current conversation, status, load, stop."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
import torch

from chatcli.chat.frontend import FrontEnd
from chatcli.engine.loader import load_engine
from chatcli.errors import UsageError
from chatcli_finetune import command
from chatcli_finetune.background import BackgroundRun


class Conv:
    def __init__(self, messages):
        self._m = messages

    def messages(self):
        return list(self._m)


class Ctx:
    """A line-based front end: no UI thread, so the finished run loads from the watcher thread."""

    frontend = FrontEnd("test")

    def __init__(self, engine, messages):
        self.announced: list[tuple[str, dict]] = []  # the chat core's listeners (plugins, the tour) hear these
        self.core = SimpleNamespace(engine=engine, conv=Conv(messages),
                                    announce=lambda event, **fields: self.announced.append((event, fields)))
        self.said: list[tuple[str, str]] = []
        self.adapter_updates = 0

    def say(self, message, kind="info"):
        self.said.append((str(message), kind))

    def adapters_changed(self):
        self.adapter_updates += 1


def run_lr(saved: dict) -> float:
    """The rate the rule gives a run with these saved settings (no --lr given)."""
    from chatcli_finetune.args import TrainArgs
    from chatcli_finetune.auto_defaults import choose

    args = TrainArgs.from_json({**saved, "lr": None})
    return choose(args, 1, 0, 10**6).lr


def _wait(run: BackgroundRun, timeout: float = 120) -> None:
    run.wait(timeout)
    assert not run.running


def test_finetune_on_the_conversation_in_background_then_load(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(command, "_RUN", {"current": None})
    engine = load_engine(str(tiny_model_dir), device="cpu")
    msgs = [{"role": "user", "content": "Where is the fox?"}, {"role": "assistant", "content": "Near the river bank."}]
    ctx = Ctx(engine, msgs)
    ids = torch.tensor([engine.tokenizer.encode_chat(msgs[:1])])
    before = engine.model(ids)

    # No --lr: the run chooses it from the data (and says so in the chat); --rank given: kept.
    command.finetune_command(ctx, f"sft --out {tmp_path / 'run'} --max-steps 6 --rank 4 --val-split 0 --load")
    run = command.current_run()
    assert "started in the background" in ctx.said[-1][0]
    with pytest.raises(UsageError, match="already going"):
        command.finetune_command(ctx, "sft")
    _wait(run)
    assert run.finished, run.errors
    assert run.status_line().startswith("finetune sft: done")
    data = [json.loads(x) for x in run.data.read_text().splitlines()]
    assert data == [{"messages": msgs}]  # trained on the current conversation
    assert any(k == "result" and "loaded adapter run" in s for s, k in ctx.said), ctx.said  # --load
    assert "run" in engine.adapters
    assert not torch.allclose(engine.model(ids), before)
    # The chat heard the settings chosen from the data, then the "what changed" report (also in DIR).
    said = "\n".join(s for s, _ in ctx.said)
    assert "finetune sft: chosen from the data (1 training example," in said and "lr " in said
    assert "finetune sft: what changed, on 1 training prompt (too few held out)" in said and "first-token KL" in said
    # ... and the memory: the rule of thumb before training, the measured peak beside it at the end.
    assert "finetune sft: trainable parameters: " in said
    assert "finetune sft: predicted memory: " in said and "MB rule of thumb (frozen model + ~10x trainable)" in said
    assert "finetune sft: memory: measured peak " in said and " vs predicted " in said
    assert said.index("predicted memory") < said.index("what changed") < said.index("measured peak")
    assert [(e, f["name"]) for e, f in ctx.announced] == [("adapter_loaded", "run")]  # as /load-lora announces
    report = json.loads((tmp_path / "run" / "what_changed.json").read_text())
    assert report["kind"] == "sft" and run.what_changed["verdict"] == report["verdict"]
    args = json.loads((tmp_path / "run" / "training_args.json").read_text())
    assert args["rank"] == 4 and args["max_steps"] == 6 and args["lr"] == pytest.approx(run_lr(args))
    command.finetune_command(ctx, "status")  # repeats the report
    assert "what changed" in ctx.said[-1][0]
    command.finetune_command(ctx, "load")  # reload replaces it
    assert engine.adapters.names == ["run"]
    assert ctx.adapter_updates == 2  # the front end heard of both loads
    assert len(ctx.announced) == 2


def test_finetune_stop_leaves_a_resumable_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(command, "_RUN", {"current": None})
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"text": "The quick brown fox jumps over the lazy dog."}) + "\n")
    run = BackgroundRun("sft", data, tmp_path / "run", ["--max-steps", "100000", "--save-every", "100000", "--rank", "2",
                                                        "--val-split", "0", "--model", str(tiny_model_dir)]).start()  # fmt: skip
    deadline = time.time() + 120
    while not run.last and time.time() < deadline:
        time.sleep(0.2)
    assert "step" in run.status_line() and "ETA" in run.status_line()
    run.stop()
    _wait(run)
    assert run.summary["status"] == "stopped", run.errors
    assert list((tmp_path / "run").glob("checkpoint-*"))
    assert "stopped at step" in run.status_line()


def test_finetune_command_refuses_a_conversation_without_answers(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(command, "_RUN", {"current": None})
    ctx = Ctx(None, [{"role": "user", "content": "hi"}])
    with pytest.raises(UsageError, match="no answer to learn from"):
        command.finetune_command(ctx, "sft")
    with pytest.raises(UsageError, match="no finished fine-tuning run"):
        command.finetune_command(ctx, "load")
    command.finetune_command(ctx, "status")
    assert "no fine-tuning run" in ctx.said[-1][0]
