"""One ``finetune rl`` run, end to end: check the inputs, load, attach the adapter, loop, save, summarise.

Order matters for "nothing written on bad input": the prompts file is read, the
grader checked (a rule parsed, a reward-model folder's config read, a plugin grader
looked up) and the prompts tokenized (tokenizer only) *before* the output folder is
created; then the model loads, the trainable LoRA is attached (:mod:`chatcli_finetune.trainable`),
a reward model is loaded beside it (off for answers), and the shared loop
(:func:`chatcli_finetune.run.run_loop`: resume, metrics lines, checkpoints, Ctrl+C)
runs :class:`chatcli_finetune.rl.trainer.RLTrainer`. A finished run saves the adapter
in PEFT's format in OUT (as the other trainers do) beside ``groups.jsonl``,
``metrics.jsonl``, ``loss.png`` and ``summary.json``.

Prompts use the format of ``chatcli rank generate`` (:func:`chatcli_rank.jsonl.read_prompts`):
``{"prompt": TEXT}`` or ``{"messages": [...]}`` ending with a user message. A prompt
longer than ``--max-len`` minus ``--max-new-tokens`` is skipped with a warning.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from chatcli.errors import ChatcliError, UsageError
from chatcli_finetune import outdir
from chatcli_finetune.plot import series, terminal_plot, write_png
from chatcli_finetune.report import Plan, QuietReporter, activation_memory, peak_memory, predicted_memory
from chatcli_finetune.rl.args import RL_RESUME_FIXED, RLArgs
from chatcli_finetune.rl.graders import PluginGrader, build_grader, installed_plugin_graders, parse_grader
from chatcli_finetune.rl.groups import GroupLog
from chatcli_finetune.rl.trainer import RLPrompt, RLTrainer
from chatcli_finetune.run import _resumed_args, init_distributed, run_loop, split
from chatcli_finetune.trainable import TRAIN_NAME, LoRASpec, attach_trainable, parse_layers, parse_targets, trainable_parameters
from chatcli_finetune.trainer import total_steps

REWARD_NAME = "reward"  # the reward model's name in the run's adapter manager


def read_rl_prompts(path: Path, strict: bool, warn: Callable[[str], None]) -> list:
    """The usable prompts of ``path`` (chatcli_rank's PromptItem); bad lines warned about and skipped."""
    from chatcli_rank.jsonl import read_prompts

    if not path.is_file():
        raise ChatcliError(f"prompts file not found: {path}")
    items, errors = read_prompts(path)
    if errors and strict:
        raise ChatcliError(f"{len(errors)} bad line(s) in {path} (first: {errors[0]}); fix them, or run without --strict")
    for e in errors:
        warn(f"{e}; skipped")
    if not items:
        raise ChatcliError(f'no prompts in {path}: one JSON object per line, {{"prompt": TEXT}} or '
                           '{"messages": [...]} ending with a user message')  # fmt: skip
    return items


def encode_prompts(items: list, tokenizer, args: RLArgs, warn: Callable[[str], None]) -> list[RLPrompt]:
    """Token ids of each prompt (with the generation prompt); too-long ones skipped with a warning."""
    room = args.max_len - args.max_new_tokens
    out, skipped = [], []
    for item in items:
        ids = tuple(tokenizer.encode_chat(item.messages))
        if len(ids) > room:
            skipped.append(item.line)
            continue
        out.append(RLPrompt(len(out), tuple(item.messages), ids, item.line))
    if skipped:
        warn(f"{len(skipped)} prompt(s) longer than --max-len {args.max_len} minus --max-new-tokens "
             f"{args.max_new_tokens} tokens skipped (lines {', '.join(map(str, skipped[:10]))})")  # fmt: skip
    if not out:
        raise ChatcliError(f"every prompt in {args.data} is longer than {room} tokens: raise --max-len")
    return out


def _resumed(args: RLArgs, out: Path) -> RLArgs:
    args = _resumed_args(args, out)  # the shared settings
    saved = outdir.read_args(out)
    if saved.get("kind") != "rl":
        raise UsageError(f"--resume: {out} holds a {saved.get('kind')} run, not an rl run; start a new --out")
    changed = [k for k in RL_RESUME_FIXED if k in saved and getattr(args, k) != saved[k]]
    if changed:
        k = changed[0]
        raise UsageError(f"--resume with a different --{k.replace('_', '-')} than the run in {out} ({saved[k]!r}); "
                         "resume with the same settings or start a new --out")  # fmt: skip
    return args


def run_rl(args: RLArgs, reporter=None, *, resume: bool = False, overwrite: bool = False, trainer_hook=None,
           plugin_graders: Callable[[], dict[str, PluginGrader]] | None = None) -> dict:  # fmt: skip
    """Train a LoRA policy with GRPO against ``args.reward``; returns ``summary`` (and the objects, for tests)."""
    from chatcli.engine.loader import load_engine, load_prompt_renderer

    reporter = reporter or QuietReporter()
    args.check()
    d = init_distributed(args.device)  # under torchrun: one process group, each process a share of every batch
    args.world_size = d.world
    if not d.main:
        reporter = QuietReporter()
    out = Path(args.out).expanduser()
    if resume:
        outdir.prepare(out, resume=True, overwrite=overwrite)  # writes nothing; refuses "nothing to resume"
        args = _resumed(args, out)
    # Everything the person gave is checked before anything is written.
    items = read_rl_prompts(Path(args.data), args.strict, reporter.message)
    spec = parse_grader(args.reward, plugin_graders or installed_plugin_graders)
    prompts = encode_prompts(items, load_prompt_renderer(args.model).tokenizer, args, reporter.message)
    if d.main:
        outdir.prepare(out, resume=resume, overwrite=overwrite)
    device = args.device
    if d.world > 1 and torch.cuda.is_available() and device in ("auto", "cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"

    engine = load_engine(args.model, dtype=args.dtype, device=device)
    model, tok = engine.model, engine.tokenizer
    train, val = split(prompts, args.val_split, args.seed)
    lora = LoRASpec(args.rank, args.alpha, args.rslora, parse_targets(args.targets),
                    parse_layers(args.layer_spec(model.config.num_hidden_layers), model.config.num_hidden_layers),
                    args.dropout)  # fmt: skip
    manager = attach_trainable(engine.adapters, lora, args.seed, base_model=args.model)
    grader = build_grader(spec, engine, name=REWARD_NAME)  # after the policy adapter: its A/B stay frozen
    if args.grad_checkpointing:
        model.set_gradient_checkpointing(True)
    params = trainable_parameters(model)
    eos = tok.eos_ids[0] if tok.eos_ids else 0
    log = GroupLog(out)
    trainer = RLTrainer(engine, params, args, eos, eos, grader, reference=lambda: manager.disabled([TRAIN_NAME]), log=log,
                        dist_=d)  # fmt: skip

    trainable = sum(p.numel() for _, p in params)
    rule = predicted_memory(manager.base_params, model.dtype.itemsize, trainable, params[0][1].dtype.itemsize)
    cfg = model.config
    longest = max(len(p.ids) for p in prompts) + args.max_new_tokens  # every row: a prompt and at most this answer
    acts = activation_memory("sft", args.batch_size * args.group_size, longest, cfg.hidden_size, cfg.num_hidden_layers,
                             cfg.vocab_size, args.dtype, args.grad_checkpointing)  # fmt: skip
    plan = Plan(kind="rl", model=args.model, train_examples=len(train), val_examples=len(val),
                total_steps=total_steps(len(train), args), trainable=trainable, total_params=manager.base_params + trainable,
                predicted_bytes=rule + acts, rule_bytes=rule, activation_bytes=acts)  # fmt: skip
    reporter.plan(plan)
    reporter.defaults([args.chosen(model.config.num_hidden_layers), f"grader: {grader.name}"])

    state = run_loop(trainer, train, val, out, args, params, reporter, resume=resume, total=plan.total_steps,
                     main=d.main, trainer_hook=trainer_hook, truncate=log.truncate)  # fmt: skip

    finished = state.step >= plan.total_steps
    hist = state.history
    summary = {
        "event": "summary", "kind": "rl", "status": "finished" if finished else "stopped", "steps": state.step,
        "total_steps": plan.total_steps, "out": str(out), "grader": grader.name,
        "first_loss": hist[0]["loss"] if hist else None, "final_loss": hist[-1]["loss"] if hist else None,
        "first_reward": hist[0]["reward"] if hist else None, "final_reward": hist[-1]["reward"] if hist else None,
        "final_kl": hist[-1]["kl"] if hist else None, "trainable_params": trainable,
        "predicted_memory_mb": round(plan.predicted_bytes / 2**20, 1), "rule_of_thumb_mb": round(rule / 2**20, 1),
        "activations_mb": round(acts / 2**20, 1),
    }  # fmt: skip
    vals = [m for m in hist if "val_reward" in m]
    if vals:
        summary["val_reward"], summary["val_kl"] = vals[-1]["val_reward"], vals[-1]["val_kl"]
    peak, how = peak_memory(model.device)
    summary["peak_memory_mb"], summary["peak_memory_measure"] = round(peak / 2**20, 1), how
    summary["elapsed_s"] = round(state.elapsed, 1)
    if not finished:
        summary["resume"] = "continue with the same command plus --resume"
    if d.main:  # one process writes the adapter and the run's files
        if finished:
            manager.save(TRAIN_NAME, out)
            for old in out.glob("checkpoint-*"):
                shutil.rmtree(old, ignore_errors=True)
        png = write_png(out / "loss.png", hist, kind="rl", model=args.model)
        summary["plot"] = str(png) if png else None
        outdir.write_json(out / "summary.json", summary)
    reporter.end(summary, terminal_plot(series(hist, "reward"), series(hist, "val_reward")))
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()
    return {"summary": summary, "engine": engine, "manager": manager, "train": train, "val": val, "grader": grader}


def rl_args(**kw) -> RLArgs:
    """RLArgs from CLI keyword arguments: an option left out (None) keeps RL's default."""
    given = {k: v for k, v in kw.items() if v is not None}
    return replace(RLArgs(kind="rl", data=str(given.pop("data")), out=str(given.pop("out"))), **given)


def cli_rl(**kw) -> dict:
    """``chatcli finetune rl``: the typer command's arguments -> :func:`run_rl` with a reporter."""
    from chatcli.cli.common import set_threads
    from chatcli_finetune.report import JsonReporter, RichReporter

    set_threads(kw.pop("threads"))
    resume, overwrite, as_json = kw.pop("resume"), kw.pop("overwrite"), kw.pop("json")
    reporter = JsonReporter() if as_json else RichReporter()
    kw["data"], kw["out"] = Path(kw["data"]), Path(kw["out"])
    return run_rl(rl_args(**kw), reporter, resume=resume, overwrite=overwrite)
