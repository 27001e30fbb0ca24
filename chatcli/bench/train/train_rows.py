"""The training batch both systems get: the same token ids, the same loss masks, the same settings.

Rows are cut from the bench's plain prefill text (:data:`chatcli.bench.prompts.PREFILL_TEXT`)
tokenized by chatcli's tokenizer, every row exactly ``sizes.train_tokens`` long (no
padding). The first half of a row is its prompt (no loss), the second half its
completion (trained): SFT's prompt/completion format. A DPO pair shares the prompt;
its chosen and rejected completions are different stretches of the text.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatcli.bench.chatcli_worker import prefill_ids
from chatcli.bench.spec import Sizes
from chatcli_finetune.args import DEFAULT_LR, TrainArgs
from chatcli_finetune.auto_defaults import lora_rank
from chatcli_finetune.trainable import SHORT_NAMES

KINDS = ("sft", "dpo")
BETAS, EPS = (0.9, 0.999), 1e-8  # AdamW's, as the plugin's Trainer builds it


@dataclass(frozen=True)
class TrainSettings:
    """What ``chatcli finetune sft|dpo`` would choose for this small batch: the LoRA shape, the rate, beta."""

    rank: int
    alpha: float
    dropout: float
    targets: tuple[str, ...]  # every linear layer of every block
    lr: float
    beta: float
    weight_decay: float


def settings(kind: str, n_examples: int) -> TrainSettings:
    """The plugin's own defaults (its rules, read from it, not copied): rank by data size, alpha 2 x rank,
    all-linear, its dropout and beta, the kind's usual learning rate (a rate changes no speed)."""
    defaults = TrainArgs(kind=kind, data="", out="")
    rank = lora_rank(n_examples)
    return TrainSettings(rank=rank, alpha=2.0 * rank, dropout=defaults.dropout, targets=SHORT_NAMES,
                         lr=DEFAULT_LR[kind], beta=defaults.beta, weight_decay=defaults.weight_decay)  # fmt: skip


@dataclass(frozen=True)
class Row:
    """One sequence: its ids, and how many leading ids are prompt (no loss on their prediction)."""

    ids: tuple[int, ...]
    prompt: int

    @property
    def mask(self) -> tuple[bool, ...]:
        return tuple(i >= self.prompt for i in range(len(self.ids)))


@dataclass(frozen=True)
class Batch:
    kind: str
    rows: tuple[Row, ...]  # SFT: the examples; DPO: the chosen rows, then the rejected rows in the same order

    @property
    def pairs(self) -> int:
        return len(self.rows) // 2

    @property
    def tokens(self) -> int:
        """Tokens through the model with gradients per optimizer step (the tokens/s numerator)."""
        return sum(len(r.ids) for r in self.rows)


def batch(tokenizer, kind: str, sizes: Sizes) -> Batch:
    """The ``kind`` batch of ``sizes.train_batch`` examples (DPO: pairs) of ``sizes.train_tokens`` ids each."""
    n, seq = sizes.train_batch, sizes.train_tokens
    half = seq // 2
    stream = prefill_ids(tokenizer, 2 * n * seq)  # enough distinct stretches for every prompt and completion

    def cut(k: int, length: int) -> tuple[int, ...]:
        return tuple(stream[k * half : k * half + length])

    if kind == "sft":
        return Batch(kind, tuple(Row(cut(2 * i, seq), half) for i in range(n)))
    # pair i: prompt = stretch 3i, chosen = stretch 3i + 1, rejected = stretch 3i + 2 (same lengths)
    chosen = [Row(cut(3 * i, half) + cut(3 * i + 1, seq - half), half) for i in range(n)]
    rejected = [Row(cut(3 * i, half) + cut(3 * i + 2, seq - half), half) for i in range(n)]
    return Batch(kind, tuple(chosen + rejected))
