"""The settings a run chooses from its data when the person gives none: steps, learning rate, LoRA shape.

The aim: a small set (10-20 preference pairs, 20-50 SFT examples) on a ~100M-parameter
model moves the model measurably without wrecking it, and a large set trains as usual.
:func:`choose` is the rule, a function of the kind, the number of training examples,
their tokens, the model's size and the batch; :func:`resolve` fills only the settings
left ``None`` (:data:`chatcli_finetune.args.AUTO`), so a flag the person gives always wins.

The rule:

1. **Epochs** (only without ``--epochs`` and ``--max-steps``): the usual
   :data:`BASE_EPOCHS`, raised until the run has at least :data:`MIN_STEPS` optimizer
   steps (tiny data gives one or two steps an epoch), at most :data:`MAX_EPOCHS`, and
   never past :data:`TOKEN_CAP` training tokens on account of the raise.
2. **Learning rate** (without ``--lr``): LoRA's movement away from the base grows with
   the sum of the learning rate over the steps (AdamW moves each weight by about the
   rate per step), so the rate is :data:`LR_AREA` divided by the area under the run's
   schedule at rate 1 (cosine over 8 steps: 4.5; constant: 8), clamped to
   [:data:`chatcli_finetune.args.DEFAULT_LR`, :data:`LR_MAX`]. Many steps (large data)
   end at the usual rate; few steps get a higher one; ``--max-steps 10`` alone gets the
   rate that makes those ten steps count. The areas are measured on SmolLM2-135M-Instruct
   (``benchmarks/dpo_visible_change.py``, ``sft_visible_change.py``: DPO area 2.25e-3
   moved the first answer token by 3.5 bits, far past visible, and KL grows about as the
   area squared; the ``concise`` demo adapter, area 9.5e-4, is the gentle end). Larger
   models take smaller steps: the rate is scaled by sqrt(:data:`REFERENCE_PARAMS` /
   parameters) for models above the reference size (a rule of thumb, not measured here).
3. **LoRA**: rank 8 below 1,000 examples, 16 below 10,000, else 32 (more data can use
   more capacity); alpha = 2 x rank; every linear layer (attention-only adapters move
   little in a few steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from chatcli_finetune.args import DEFAULT_LR, TrainArgs, lr_at
from chatcli_finetune.trainer import steps_per_epoch

BASE_EPOCHS = {"sft": 3.0, "dpo": 2.0, "reward": 2.0}  # passes over plentiful data
MIN_STEPS = {"sft": 16, "dpo": 8, "reward": 16}  # optimizer steps a small set gets at least
MAX_EPOCHS = 30.0
TOKEN_CAP = 150_000  # training tokens the raised epochs may reach (~5 min of SFT on 2 CPU cores, 135M)
LR_AREA = {"sft": 1e-2, "dpo": 1e-3, "reward": 3e-3}  # Σ learning rate over the run that moves a ~135M model
LR_MAX = {"sft": 2e-3, "dpo": 5e-4, "reward": 1e-3}  # never faster: Adam's first steps jump by about the rate
REFERENCE_PARAMS = 135e6  # the size the areas were measured at


@dataclass(frozen=True)
class Choice:
    """What the rule gives for every automatic setting, and why (for the run's opening lines)."""

    lr: float
    epochs: float
    steps: int
    rank: int
    alpha: float
    targets: str
    why_steps: str  # "" when the usual epochs (or the person's) stand
    why_lr: str


def lora_rank(n_examples: int) -> int:
    return 8 if n_examples < 1_000 else 16 if n_examples < 10_000 else 32


def _steps(n_train: int, epochs: float, args: TrainArgs) -> int:
    return max(1, math.ceil(epochs * steps_per_epoch(n_train, args)))


def schedule_area(steps: int, args: TrainArgs) -> float:
    """Σ over the run's steps of its schedule at peak rate 1 (warmup included)."""
    unit = replace(args, lr=1.0)
    return sum(lr_at(k, steps, unit) for k in range(steps))


def choose(args: TrainArgs, n_train: int, tokens: int, model_params: int) -> Choice:
    """The rule (module doc) for ``args``' kind and batch, ``n_train`` training examples
    holding ``tokens`` tokens in all, and a model of ``model_params`` parameters. Settings
    ``args`` already holds are kept: the steps follow ``--max-steps`` / ``--epochs``, and
    the rate the steps."""
    kind = args.kind
    why_steps = ""
    if args.max_steps is not None:
        epochs = args.epochs if args.epochs is not None else BASE_EPOCHS[kind]
        steps = args.max_steps
    elif args.epochs is not None:
        epochs = args.epochs
        steps = _steps(n_train, epochs, args)
    else:
        spe = steps_per_epoch(n_train, args)
        cap = max(BASE_EPOCHS[kind], math.floor(TOKEN_CAP / max(1, tokens)))
        epochs = float(min(max(BASE_EPOCHS[kind], math.ceil(MIN_STEPS[kind] / spe)), MAX_EPOCHS, cap))
        steps = _steps(n_train, epochs, args)
        if epochs > BASE_EPOCHS[kind]:
            why_steps = f"{spe} step(s) an epoch, and a small set needs about {MIN_STEPS[kind]} steps"
    scale = min(1.0, math.sqrt(REFERENCE_PARAMS / max(1, model_params)))
    area = schedule_area(steps, args)
    lo, hi, target = DEFAULT_LR[kind] * scale, LR_MAX[kind] * scale, LR_AREA[kind] * scale
    lr = args.lr if args.lr is not None else min(hi, max(lo, target / area))
    why_lr = (f"lr = {target:.0e} (the rate summed over a run that visibly moves the model) / {area:.3g} "
              f"({args.schedule} over {steps} steps, summed), within {lo:.0e}..{hi:.0e}")  # fmt: skip
    rank = args.rank if args.rank is not None else lora_rank(n_train)
    alpha = args.alpha if args.alpha is not None else 2.0 * rank
    targets = args.targets if args.targets is not None else "all-linear"
    return Choice(lr, float(epochs), steps, rank, alpha, targets, why_steps, why_lr)


def resolve(args: TrainArgs, n_train: int, tokens: int, model_params: int) -> tuple[TrainArgs, list[str]]:
    """``args`` with every setting left ``None`` chosen by :func:`choose`, and the one or two
    lines saying what was chosen and why (none when the person gave every setting)."""
    missing = args.unresolved()
    if not missing:
        return args, []
    c = choose(args, n_train, tokens, model_params)
    parts = []
    if "epochs" in missing and args.max_steps is None:
        parts.append(f"{c.epochs:g} epochs = {c.steps} steps")
    if "lr" in missing:
        parts.append(f"lr {c.lr:.1e}")
    if {"rank", "alpha", "targets"} & set(missing):
        parts.append(f"LoRA r {c.rank}, alpha {c.alpha:g}, {c.targets}")
    why = [w for w in (c.why_steps, c.why_lr if "lr" in missing else "") if w]
    size = f"{model_params / 1e6:,.0f}M" if model_params >= 1e6 else f"{model_params:,}-parameter"
    lines = [f"chosen from the data ({_count(n_train, 'training example')}, {tokens:,} tokens, a {size} model): "
             + ", ".join(parts) + " (any flag overrides)"]  # fmt: skip
    if why:
        lines.append("why: " + "; ".join(why))
    return replace(args, **{k: getattr(c, k) for k in missing}), lines


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}" + ("" if n == 1 else "s")
