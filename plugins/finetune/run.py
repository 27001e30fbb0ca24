"""One fine-tuning run, end to end: output dir, model, data, adapter, loop, files, summary.

:func:`run_training` is what ``chatcli finetune sft|dpo|reward`` calls (and the
tests, with a tiny model directory as ``args.model``). Under ``torchrun`` every
process runs it; process 0 alone writes files and reports. Settings the person did
not give are chosen from the loaded data (:mod:`chatcli_finetune.auto_defaults`,
reported before training); a finished run ends with the "what changed" report
(:mod:`chatcli_finetune.what_changed`, ``OUT/what_changed.json``). Returns a dict with the
``summary`` (also the last ``--json`` line and ``OUT/summary.json``) and, for callers
that keep going in-process, the trained ``model`` (adapter attached as
``finetune``), ``tokenizer``, adapter ``manager``, reward ``head`` and the
``train`` / ``val`` items.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

from chatcli.errors import UsageError
from chatcli_finetune import outdir, what_changed
from chatcli_finetune.args import RESUME_FIXED, TrainArgs
from chatcli_finetune.auto_defaults import resolve
from chatcli_finetune.data import Encoder, check_loaded, load_examples
from chatcli_finetune.plot import terminal_plot, write_png
from chatcli_finetune.report import Plan, QuietReporter, activation_memory, peak_memory, predicted_memory
from chatcli_finetune.trainable import (
    TRAIN_NAME, LoRASpec, attach_trainable, new_score_head, parse_layers, parse_targets, trainable_parameters,
)  # fmt: skip
from chatcli_finetune.trainer import Dist, LoopState, Trainer, total_steps


def init_distributed(device: str) -> Dist:
    """torchrun's environment -> a process group (gloo on CPU, NCCL on GPUs); none for one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()) else "gloo"
        dist.init_process_group(backend)
    return Dist(rank=dist.get_rank(), world=dist.get_world_size())


def split(items: list, val_split: float, seed: int) -> tuple[list, list]:
    """A seeded held-out share (at least one training example stays)."""
    n_val = min(len(items) - 1, int(round(len(items) * val_split))) if val_split > 0 else 0
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed + 7)).tolist()
    val_idx = set(order[:n_val])
    return [x for i, x in enumerate(items) if i not in val_idx], [items[i] for i in sorted(val_idx)]


def _resumed_args(args: TrainArgs, out: Path) -> TrainArgs:
    saved = TrainArgs.from_json(outdir.read_args(out))
    # Settings not given continue as the run being resumed chose them.
    args = replace(args, **{k: getattr(saved, k) for k in args.unresolved() if getattr(saved, k) is not None})
    changed = [k for k in RESUME_FIXED if k not in ("world_size",) and getattr(args, k) != getattr(saved, k)]
    if changed:
        raise UsageError(
            f"--resume with a different --{changed[0].replace('_', '-')} than the run in {out} "
            f"({getattr(saved, changed[0])!r}); resume with the same settings or start a new --out"
        )
    return args


@contextmanager
def _stop_on_signals(trainer: Trainer, reporter):
    """Ctrl+C / SIGTERM: finish the current step, checkpoint, exit cleanly (once; twice = abort)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        if trainer.stopping:
            signal.signal(signum, old[signum])
            raise KeyboardInterrupt
        reporter.message("stopping after this step (a checkpoint is written; continue with --resume)")
        trainer.stop()

    for s in old:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def load_model(args: TrainArgs, rank_device: str):
    """The model, its tokenizer and its adapter manager, loaded as an engine."""
    from chatcli.engine.loader import load_engine

    engine = load_engine(args.model, dtype=args.dtype, device=rank_device)
    return engine.model, engine.tokenizer, engine.adapters


def run_loop(trainer: Trainer, train: list, val: list, out: Path, args: TrainArgs, params: list, reporter, *,
             resume: bool, total: int, main: bool = True, trainer_hook=None,
             truncate: Callable[[int], None] | None = None) -> LoopState:  # fmt: skip
    """The loop with its files: continue from the newest checkpoint (``--resume``), record the settings,
    append each step's metrics to ``OUT/metrics.jsonl``, checkpoint every ``--save-every`` steps, and
    stop after the current step on Ctrl+C / SIGTERM. ``truncate(step)`` drops a kind's own per-step
    files past the checkpoint being resumed (``metrics.jsonl`` is handled here)."""
    state = LoopState()
    ckpt = outdir.latest_checkpoint(out) if resume else None
    if resume and ckpt is not None:
        saved = outdir.load_checkpoint(ckpt, params, trainer.optimizer)
        state = LoopState(step=saved["step"], tokens=saved.get("tokens", 0), elapsed=saved.get("elapsed", 0.0),
                          history=[m for m in outdir.read_metrics(out) if m.get("step", 0) <= saved["step"]])  # fmt: skip
        reporter.message(f"resuming from step {state.step} ({ckpt.name})")
    elif resume:
        reporter.message("no checkpoint yet: starting from step 0")
    if main:
        if resume:
            outdir.truncate_metrics(out, state.step)
            if truncate is not None:
                truncate(state.step)
        outdir.write_json(out / outdir.ARGS_NAME, args.to_json())

    metrics_file = out / outdir.METRICS_NAME

    def on_step(m: dict) -> None:
        if main:
            with metrics_file.open("a", encoding="utf-8") as f:
                f.write(json.dumps(m) + "\n")
        reporter.step(m)
        if trainer_hook is not None:
            trainer_hook(trainer, m)

    def on_checkpoint(step: int) -> None:
        if main:
            outdir.save_checkpoint(out, step, params, trainer.optimizer,
                                   {"tokens": state.tokens, "elapsed": state.elapsed})  # fmt: skip

    reporter.start(total, state.step)
    try:
        with _stop_on_signals(trainer, reporter):
            state = trainer.run(train, val, state, on_step, on_checkpoint)
    finally:
        reporter.close()
    return state


def run_training(args: TrainArgs, reporter=None, *, resume: bool = False, overwrite: bool = False,
                 trainer_hook=None) -> dict:  # fmt: skip
    reporter = reporter or QuietReporter()
    args.check()
    d = init_distributed(args.device)
    args.world_size = d.world
    out = Path(args.out).expanduser()
    if resume:
        args = _resumed_args(args, out)
    if d.main:
        outdir.prepare(out, resume=resume, overwrite=overwrite)
    device = args.device
    if d.world > 1 and torch.cuda.is_available() and device in ("auto", "cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    if not d.main:
        reporter = QuietReporter()

    model, tok, adapters = load_model(args, device)
    encoder = Encoder(tok)
    loaded = load_examples(Path(args.data), encoder, "sft" if args.kind == "sft" else "pref", args.max_len)
    check_loaded(loaded, Path(args.data), args.max_len, args.strict, reporter.message)
    train, val = split(loaded.items, args.val_split, args.seed)
    if d.main:  # which pairs were held out: what `chatcli rank stats --reward DIR` checks the model on
        outdir.write_split(out, Path(args.data), train, val)
    # Settings not given (lr, epochs, LoRA shape) are chosen from the data now that it is known.
    tokens = sum(len(s.ids) for x in train for s in ((x,) if args.kind == "sft" else (x.chosen, x.rejected)))
    args, chosen = resolve(args, len(train), tokens, sum(p.numel() for p in model.parameters()))
    reporter.defaults(chosen)

    spec = LoRASpec(args.rank, args.alpha, args.rslora, parse_targets(args.targets),
                    parse_layers(args.layers, model.config.num_hidden_layers), args.dropout)  # fmt: skip
    manager = attach_trainable(adapters, spec, args.seed, base_model=args.model)
    head = new_score_head(model, args.seed) if args.kind == "reward" else None
    if args.grad_checkpointing:
        model.set_gradient_checkpointing(True)
    params = trainable_parameters(model, head)
    pad_id = tok.eos_ids[0] if tok.eos_ids else 0

    trainer = Trainer(model, params, args, pad_id, reference=lambda: manager.disabled([TRAIN_NAME]), head=head, dist_=d)
    trainable = sum(p.numel() for _, p in params)
    rule = predicted_memory(manager.base_params, model.dtype.itemsize, trainable, params[0][1].dtype.itemsize)
    cfg = model.config
    # Batches are padded to their longest row, so the longest example (at most --max-len) bounds them.
    longest = max(len(s.ids) for x in train + val for s in ((x,) if args.kind == "sft" else (x.chosen, x.rejected)))
    acts = activation_memory(args.kind, args.batch_size, min(args.max_len, longest), cfg.hidden_size,
                             cfg.num_hidden_layers, cfg.vocab_size, args.dtype, args.grad_checkpointing)  # fmt: skip
    plan = Plan(
        kind=args.kind, model=args.model, train_examples=len(train), val_examples=len(val),
        total_steps=total_steps(len(train), args), trainable=trainable, total_params=manager.base_params + trainable,
        predicted_bytes=rule + acts, world_size=d.world, rule_bytes=rule, activation_bytes=acts,
    )  # fmt: skip
    reporter.plan(plan)

    state = run_loop(trainer, train, val, out, args, params, reporter, resume=resume, total=plan.total_steps,
                     main=d.main, trainer_hook=trainer_hook)  # fmt: skip

    finished = state.step >= plan.total_steps
    hist = state.history
    summary = {
        "event": "summary", "kind": args.kind, "status": "finished" if finished else "stopped", "steps": state.step,
        "total_steps": plan.total_steps, "out": str(out),
        "first_loss": hist[0]["loss"] if hist else None, "final_loss": hist[-1]["loss"] if hist else None,
        "trainable_params": trainable, "predicted_memory_mb": round(plan.predicted_bytes / 2**20, 1),
        "rule_of_thumb_mb": round(plan.rule_bytes / 2**20, 1), "activations_mb": round(plan.activation_bytes / 2**20, 1),
    }  # fmt: skip
    vals = [m for m in hist if "val_loss" in m]
    if vals:
        summary["val_loss"] = vals[-1]["val_loss"]
        if "val_accuracy" in vals[-1]:
            summary["val_accuracy"] = vals[-1]["val_accuracy"]
            summary["val_margin"] = vals[-1]["val_margin"]
    if hist and "accuracy" in hist[-1]:
        summary["train_accuracy"], summary["train_margin"] = hist[-1]["accuracy"], hist[-1]["margin"]
    peak, how = peak_memory(torch.device(device) if device != "auto" else model.device)
    summary["peak_memory_mb"], summary["peak_memory_measure"] = round(peak / 2**20, 1), how
    summary["elapsed_s"] = round(state.elapsed, 1)
    plot_text = ""
    if d.main:
        if finished:
            adapter = manager.adapter(TRAIN_NAME)
            if head is not None:
                adapter.heads = {"score": head.weight.detach().float().cpu()}
            manager.save(TRAIN_NAME, out)
            for old in out.glob("checkpoint-*"):
                import shutil

                shutil.rmtree(old, ignore_errors=True)
            reporter.message("measuring what changed (base model vs adapter)...")
            try:
                report = what_changed.measure(model, tok, manager, TRAIN_NAME, args.kind, train, val, beta=args.beta,
                                              head=head, pad_id=pad_id)  # fmt: skip
            except Exception as e:  # the adapter is saved: a failed measurement must not cost the run
                reporter.message(f"warning: could not measure what changed ({type(e).__name__}: {e})")
            else:
                outdir.write_json(out / what_changed.REPORT_NAME, report)
                summary["what_changed"] = report["verdict"]
                reporter.what_changed(report)
        else:
            summary["resume"] = "continue with the same command plus --resume"
        train_pts = [(m["step"], m["loss"]) for m in hist]
        val_pts = [(m["step"], m["val_loss"]) for m in vals]
        png = write_png(out / "loss.png", hist, kind=args.kind, model=args.model)
        summary["plot"] = str(png) if png else None
        plot_text = terminal_plot(train_pts, val_pts)
        outdir.write_json(out / "summary.json", summary)
    reporter.end(summary, plot_text)
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()
    return {"summary": summary, "model": model, "tokenizer": tok, "manager": manager, "head": head,
            "train": train, "val": val}  # fmt: skip
