"""``chatcli finetune sft|dpo|reward DATA.jsonl --out DIR [flags]``, ``chatcli finetune rl PROMPTS.jsonl
--reward GRADER --out DIR [flags]`` and ``chatcli finetune report DIR``.

Imported only when ``chatcli finetune ...`` runs. The three commands share their
flags (``--beta`` is DPO's); every run works the same under
``torchrun --nproc-per-node N -m chatcli finetune ...`` (data-parallel).
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from chatcli.cli.common import DEFAULT_MODEL
from chatcli.errors import UsageError
from chatcli_finetune.rl import options as rlo

finetune_app = typer.Typer(
    help="Train LoRA adapters (PEFT format): sft, dpo, reward, rl.", no_args_is_help=True, add_completion=False
)

_O = typer.Option
DataArg = typer.Argument(None, help="JSONL data (TRL formats; what 'chatcli rank export' writes); "
                         "with --from-history: conversation ids (3,5,9) or all.", show_default=False)
OutOpt = _O(..., "--out", "-o", help="Output directory (the PEFT adapter, metrics, loss plot, checkpoints).")
ModelOpt = _O(DEFAULT_MODEL, "--model", "-m", help="Base model: name, local directory, .gguf or hf:ORG/NAME.")
RankOpt = _O(None, "--rank", help="LoRA rank r (default: from the data: 8 below 1,000 examples, 16 below 10,000, "
             "else 32).", show_default=False)
AlphaOpt = _O(None, "--alpha", help="LoRA alpha (scaling alpha/r; default: 2 x rank).", show_default=False)
RsloraOpt = _O(False, "--rslora", help="Rank-stabilised scaling alpha/sqrt(r).")
TargetsOpt = _O(None, "--targets", help="all-linear (default) or a comma list: "
                "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj.", show_default=False)
LayersOpt = _O(None, "--layers", help="Layers to adapt: e.g. 0-5,9 or last:4 (default: all).")
DropoutOpt = _O(0.05, "--dropout", help="LoRA dropout.")
EpochsOpt = _O(None, "--epochs", help="Passes over the training data (ignored with --max-steps; default: from the data, "
               "3 for sft and 2 for dpo/reward, more for small sets).", show_default=False)
MaxStepsOpt = _O(None, "--max-steps", help="Optimizer steps to run (overrides --epochs).")
LrOpt = _O(None, "--lr", help="Peak learning rate (default: from the data and the steps; see the README).", show_default=False)
ScheduleOpt = _O("cosine", "--schedule", help="constant, linear or cosine.")
WarmupOpt = _O(0.0, "--warmup", help="Warmup: steps (>= 1) or a fraction of all steps (< 1).")
BatchOpt = _O(4, "--batch-size", help="Examples per micro-batch (per process).")
AccumOpt = _O(1, "--grad-accum", help="Micro-batches per optimizer step.")
MaxLenOpt = _O(512, "--max-len", help="Longest example in tokens (longer ones are skipped, with a warning).")
ValOpt = _O(0.1, "--val-split", help="Held-out fraction for validation loss / accuracy.")
SeedOpt = _O(0, "--seed", help="Seed (data order, adapter init, dropout).")
DtypeOpt = _O("float32", "--dtype", help="float32 or bfloat16 (the base model's weights and compute).")
DeviceOpt = _O("auto", "--device", help="auto, cpu, cuda, cuda:N or mps.")
CkptOpt = _O(False, "--grad-checkpointing", help="Recompute activations in backward (less memory, slower).")
ResumeOpt = _O(False, "--resume", help="Continue the run in --out from its last checkpoint.")
OverwriteOpt = _O(False, "--overwrite", help="Replace an existing --out directory.")
JsonOpt = _O(False, "--json", help="One metrics object per line on stdout instead of the progress bar.")
StrictOpt = _O(False, "--strict", help="Refuse the data file if any line is bad (default: skip bad lines).")
SaveEveryOpt = _O(50, "--save-every", help="Write a checkpoint every N steps.")
EvalEveryOpt = _O(0, "--eval-every", help="Validate every N steps (0: at the end of each epoch).")
BetaOpt = _O(0.1, "--beta", help="DPO beta (strength of the pull away from the reference).")
ThreadsOpt = _O(None, "--threads", help="CPU threads for torch.")
HistoryOpt = _O(False, "--from-history", help="SFT on saved conversations (active branch; assistant turns are targets): "
                "all, or the ids given as DATA (e.g. --from-history 3,5).")
RankingsOpt = _O(False, "--from-rankings", help="Use the ranking store: best answers (sft) or all pairs (dpo, reward).")


def _sleeping_omp_threads() -> None:
    # Before torch loads OpenMP: threads that spin while they wait for each other made a DPO step 3-4x
    # slower on a busy 2-core machine (50-59 s against 15-16 s, load 4; the chat shares the cores with
    # /finetune); sleeping threads cost next to nothing there. A value the person set wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _run(kind: str, **kw) -> None:
    _sleeping_omp_threads()
    from chatcli.cli.common import set_threads
    from chatcli_finetune.args import TrainArgs
    from chatcli_finetune.report import JsonReporter, RichReporter
    from chatcli_finetune.run import run_training

    set_threads(kw.pop("threads"))
    resume, overwrite, as_json = kw.pop("resume"), kw.pop("overwrite"), kw.pop("json")
    from_history, from_rankings = kw.pop("from_history"), kw.pop("from_rankings")
    reporter = JsonReporter() if as_json else RichReporter()
    if from_history or from_rankings:
        from chatcli_finetune.sources import build_data

        # With --from-history, DATA (if any) names the conversations: "3,5" or "all".
        ids = (str(kw["data"]) if kw["data"] is not None else "all") if from_history else None
        if from_rankings and kw["data"] is not None:
            raise UsageError("--from-rankings reads the ranking store: give no DATA file")
        kw["data"] = build_data(kind, from_history=ids, from_rankings=from_rankings, warn=reporter.message)
    elif kw["data"] is None:
        raise UsageError("give a DATA file, or --from-history [IDS|all] / --from-rankings")
    kw["data"], kw["out"] = str(kw["data"]), str(kw["out"])
    args = TrainArgs(kind=kind, **kw)
    result = run_training(args, reporter, resume=resume, overwrite=overwrite)
    if result["summary"]["status"] != "finished":
        raise typer.Exit(130)


@finetune_app.command("sft")
def sft(data: Path | None = DataArg, out: Path = OutOpt, model: str = ModelOpt, rank: int | None = RankOpt,
        alpha: float | None = AlphaOpt, rslora: bool = RsloraOpt, targets: str | None = TargetsOpt,
        layers: str | None = LayersOpt, dropout: float = DropoutOpt,
        epochs: float | None = EpochsOpt, max_steps: int | None = MaxStepsOpt, lr: float | None = LrOpt,
        schedule: str = ScheduleOpt, warmup: float = WarmupOpt, batch_size: int = BatchOpt, grad_accum: int = AccumOpt,
        max_len: int = MaxLenOpt, val_split: float = ValOpt, seed: int = SeedOpt, dtype: str = DtypeOpt,
        device: str = DeviceOpt, grad_checkpointing: bool = CkptOpt, resume: bool = ResumeOpt,
        overwrite: bool = OverwriteOpt, json: bool = JsonOpt, strict: bool = StrictOpt, save_every: int = SaveEveryOpt,
        eval_every: int = EvalEveryOpt, threads: int | None = ThreadsOpt, from_history: bool = HistoryOpt,
        from_rankings: bool = RankingsOpt) -> None:  # fmt: skip
    """Supervised fine-tuning: loss on assistant turns (messages) or completions (prompt/completion)."""
    _run("sft", **locals())


@finetune_app.command("dpo")
def dpo(data: Path | None = DataArg, out: Path = OutOpt, model: str = ModelOpt, rank: int | None = RankOpt,
        alpha: float | None = AlphaOpt, rslora: bool = RsloraOpt, targets: str | None = TargetsOpt,
        layers: str | None = LayersOpt, dropout: float = DropoutOpt,
        epochs: float | None = EpochsOpt, max_steps: int | None = MaxStepsOpt, lr: float | None = LrOpt,
        schedule: str = ScheduleOpt, warmup: float = WarmupOpt, batch_size: int = BatchOpt, grad_accum: int = AccumOpt,
        max_len: int = MaxLenOpt, val_split: float = ValOpt, seed: int = SeedOpt, dtype: str = DtypeOpt,
        device: str = DeviceOpt, grad_checkpointing: bool = CkptOpt, resume: bool = ResumeOpt,
        overwrite: bool = OverwriteOpt, json: bool = JsonOpt, strict: bool = StrictOpt, save_every: int = SaveEveryOpt,
        eval_every: int = EvalEveryOpt, beta: float = BetaOpt, threads: int | None = ThreadsOpt,
        from_rankings: bool = RankingsOpt) -> None:  # fmt: skip
    """DPO on chosen/rejected pairs; the reference is the base model (the adapter switched off)."""
    _run("dpo", from_history=False, **locals())


@finetune_app.command("reward")
def reward(data: Path | None = DataArg, out: Path = OutOpt, model: str = ModelOpt, rank: int | None = RankOpt,
           alpha: float | None = AlphaOpt, rslora: bool = RsloraOpt, targets: str | None = TargetsOpt,
           layers: str | None = LayersOpt,
           dropout: float = DropoutOpt, epochs: float | None = EpochsOpt, max_steps: int | None = MaxStepsOpt,
           lr: float | None = LrOpt, schedule: str = ScheduleOpt, warmup: float = WarmupOpt, batch_size: int = BatchOpt,
           grad_accum: int = AccumOpt, max_len: int = MaxLenOpt, val_split: float = ValOpt, seed: int = SeedOpt,
           dtype: str = DtypeOpt, device: str = DeviceOpt, grad_checkpointing: bool = CkptOpt,
           resume: bool = ResumeOpt, overwrite: bool = OverwriteOpt, json: bool = JsonOpt, strict: bool = StrictOpt,
           save_every: int = SaveEveryOpt, eval_every: int = EvalEveryOpt,
           threads: int | None = ThreadsOpt, from_rankings: bool = RankingsOpt) -> None:  # fmt: skip
    """A reward model: LoRA + a scalar score head, pairwise (Bradley-Terry) loss; saved as PEFT SEQ_CLS."""
    _run("reward", from_history=False, **locals())


@finetune_app.command("rl")
def rl(data: Path = rlo.PromptsArg, out: Path = OutOpt, reward: str = rlo.RewardOpt, group_size: int | None = rlo.GroupOpt,
       max_new_tokens: int | None = rlo.MaxNewOpt, temperature: float | None = rlo.TemperatureOpt,
       beta: float | None = rlo.BetaOpt, model: str = ModelOpt, rank: int | None = rlo.RankOpt,
       alpha: float | None = rlo.AlphaOpt, rslora: bool = RsloraOpt, targets: str | None = rlo.TargetsOpt,
       layers: str | None = rlo.LayersOpt, dropout: float | None = rlo.DropoutOpt, epochs: float | None = rlo.EpochsOpt,
       max_steps: int | None = MaxStepsOpt, lr: float | None = rlo.LrOpt, schedule: str | None = rlo.ScheduleOpt,
       warmup: float = WarmupOpt, batch_size: int | None = rlo.BatchOpt, grad_accum: int = AccumOpt,
       max_len: int = MaxLenOpt, val_split: float = ValOpt, seed: int = SeedOpt, dtype: str = DtypeOpt,
       device: str = DeviceOpt, grad_checkpointing: bool = CkptOpt, resume: bool = ResumeOpt,
       overwrite: bool = OverwriteOpt, json: bool = JsonOpt, strict: bool = StrictOpt,
       save_every: int | None = rlo.SaveEveryOpt, eval_every: int = EvalEveryOpt,
       threads: int | None = ThreadsOpt) -> None:  # fmt: skip
    """Reinforcement learning (GRPO): G answers per prompt, graded; the better ones pushed up, KL to the base."""
    kw = dict(locals())
    _sleeping_omp_threads()  # as for the other trainers (see there)
    from chatcli_finetune.rl.run import cli_rl

    if cli_rl(**kw)["summary"]["status"] != "finished":
        raise typer.Exit(130)


@finetune_app.command("report")
def report(out: Path = typer.Argument(..., help="A run folder (the --out of 'chatcli finetune ...')."),
           as_json: bool = _O(False, "--json", help="One JSON object: settings, summary, metrics, what changed."),
           all_steps: bool = _O(False, "--all", help="Every step in the metrics table (default: about 25 rows).")) -> None:  # fmt: skip
    """Print a run's metrics table, its settings and its "what changed" report (opens nothing)."""
    import json as json_

    from chatcli_finetune.run_report import load_report, render_report

    data = load_report(out)
    if as_json:
        print(json_.dumps(data, ensure_ascii=False, indent=2))
    else:
        render_report(data, all_steps=all_steps)
