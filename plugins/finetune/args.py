"""The settings of one fine-tuning run (every CLI flag), checked at the boundary.

The settings :data:`AUTO` names (learning rate, epochs, LoRA rank, alpha and targets)
default to ``None``: "not given". :func:`chatcli_finetune.auto_defaults.resolve`
fills them from the data once it is loaded, and never touches a value the person
gave, so a flag always wins over the rule.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from chatcli.engine.params import check_seed
from chatcli.errors import UsageError

KINDS = ("sft", "dpo", "reward", "rl")  # rl: chatcli_finetune.rl.args.RLArgs
SCHEDULES = ("constant", "linear", "cosine")
DEFAULT_LR = {"sft": 2e-4, "dpo": 5e-5, "reward": 1e-4}  # the usual rates: the floor of the automatic choice
# Settings left None mean "not given": chosen from the data (chatcli_finetune.auto_defaults).
AUTO = ("lr", "epochs", "rank", "alpha", "targets")
# Settings a resumed run must share with the run it continues (the rest may change, e.g. --max-steps).
RESUME_FIXED = ("kind", "data", "model", "rank", "alpha", "rslora", "targets", "layers", "seed", "batch_size",
                "grad_accum", "max_len", "val_split", "dtype", "beta", "world_size")  # fmt: skip


@dataclass
class TrainArgs:
    kind: str
    data: str
    out: str
    model: str = "smollm2-135m-instruct"
    rank: int | None = None  # None: chosen from the data (auto_defaults)
    alpha: float | None = None  # None: 2 x rank
    rslora: bool = False
    targets: str | None = None  # None: all-linear
    layers: str | None = None
    dropout: float = 0.05
    epochs: float | None = None  # None: chosen from the data (ignored with max_steps)
    max_steps: int | None = None
    lr: float | None = None  # None: chosen from the data and the steps (auto_defaults)
    schedule: str = "cosine"
    warmup: float = 0.0  # >= 1: steps; < 1: a fraction of all steps
    batch_size: int = 4
    grad_accum: int = 1
    max_len: int = 512
    val_split: float = 0.1
    seed: int = 0
    dtype: str = "float32"
    device: str = "auto"
    grad_checkpointing: bool = False
    beta: float = 0.1
    save_every: int = 50
    eval_every: int = 0  # 0: at the end of every epoch and of the run
    weight_decay: float = 0.0
    strict: bool = False
    world_size: int = 1

    def check(self) -> "TrainArgs":
        if self.kind not in KINDS:
            raise UsageError(f"unknown fine-tuning kind {self.kind!r}: use sft, dpo or reward")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"invalid --schedule {self.schedule!r}: use constant, linear or cosine")
        positive = {"--batch-size": self.batch_size, "--grad-accum": self.grad_accum, "--max-len": self.max_len,
                    "--save-every": self.save_every}  # fmt: skip
        for flag, v in positive.items():
            if v < 1:
                raise UsageError(f"invalid {flag} {v}: use an integer >= 1")
        if self.max_len < 2:
            raise UsageError("--max-len must be at least 2 tokens")
        if self.max_steps is not None and self.max_steps < 1:
            raise UsageError(f"invalid --max-steps {self.max_steps}: use an integer >= 1")
        if self.epochs is not None and not (math.isfinite(self.epochs) and self.epochs > 0):
            raise UsageError(f"invalid --epochs {self.epochs}: use a positive number")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise UsageError(f"invalid --lr {self.lr}: use a positive number")
        if self.rank is not None and self.rank < 1:
            raise UsageError(f"invalid --rank {self.rank}: use an integer >= 1")
        if self.alpha is not None and not (math.isfinite(self.alpha) and self.alpha > 0):
            raise UsageError(f"invalid --alpha {self.alpha}: use a positive number")
        if not 0.0 <= self.val_split < 1.0:
            raise UsageError(f"invalid --val-split {self.val_split}: use 0 <= fraction < 1")
        if self.warmup < 0:
            raise UsageError(f"invalid --warmup {self.warmup}: steps (>= 1) or a fraction (< 1)")
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise UsageError(f"invalid --beta {self.beta}: use a positive number")
        check_seed(self.seed, "--seed")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise UsageError(f"invalid --dtype {self.dtype!r}: use float32 or bfloat16 (float16 trains poorly)")
        return self

    def unresolved(self) -> list[str]:
        """The :data:`AUTO` settings not given (still None)."""
        return [k for k in AUTO if getattr(self, k) is None]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "TrainArgs":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def lr_at(step: int, total: int, args: TrainArgs) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then the schedule."""
    warm = int(args.warmup) if args.warmup >= 1 else int(math.ceil(args.warmup * total))
    if step < warm:
        return args.lr * (step + 1) / (warm + 1)
    if args.schedule == "constant":
        return args.lr
    progress = (step - warm) / max(1, total - warm)
    if args.schedule == "linear":
        return args.lr * max(0.0, 1.0 - progress)
    return args.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
