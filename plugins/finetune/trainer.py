"""The training loop shared by SFT, DPO and the reward model; data-parallel under torchrun.

One optimizer step takes a *global batch* of ``batch_size × grad_accum × world_size``
examples from a per-epoch permutation drawn from the seed. It is cut into
micro-batches of ``batch_size``; process ``rank`` runs micro-batches ``rank,
rank + world, ...``. Each micro-batch's loss *sum* is divided by the target count of
the whole global batch (known to every process without communication), so the summed
gradients — accumulated locally, then all-reduced over processes (only the LoRA
gradients: a few MB) — are exactly the gradient of the global mean, however the
batch is split. Dropout draws from a generator reseeded from (seed, step, rank
micro-batch), and the data order from (seed, epoch), so a resumed run repeats an
uninterrupted one step for step.

AdamW updates the LoRA A/B tensors (and the reward head) only; the base model is
frozen. So the DPO reference (the base: the adapter switched off) gives each pair the
same sequence log-probs all run long: the trainer computes them once per pair, on first
use, and keeps them (TRL's ``precompute_ref_log_probs``, done lazily). Each pair is
computed on its own, so its values do not depend on which micro-batch met it first
(a resumed run still repeats an uninterrupted one). A pair's shared prompt runs through
the model once for both of its rows (:mod:`chatcli_finetune.pairs.shared_prompt`). ``stop()`` (Ctrl+C, SIGTERM, ``/finetune stop``) ends the run after the
current step with a checkpoint, so ``--resume`` continues it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from chatcli.model.training.kept_heap import kept_heap
from chatcli_finetune.args import TrainArgs, lr_at
from chatcli_finetune.data import Example, Pair, collate
from chatcli_finetune.losses import Sums, dpo_sums, reward_sums, sft_sums
from chatcli_finetune.pairs.shared_prompt import pair_sequence_logps


@dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t


@dataclass
class LoopState:
    step: int = 0
    tokens: int = 0
    elapsed: float = 0.0  # seconds of training before this process (resume)
    history: list[dict] = field(default_factory=list)


def steps_per_epoch(n_train: int, args: TrainArgs) -> int:
    return max(1, math.ceil(n_train / (args.batch_size * args.grad_accum * args.world_size)))


def total_steps(n_train: int, args: TrainArgs) -> int:
    if args.max_steps is not None:
        return args.max_steps
    return max(1, math.ceil(args.epochs * steps_per_epoch(n_train, args)))


def global_batch(step: int, n_train: int, args: TrainArgs) -> list[int]:
    """Indexes into the training set for optimizer step ``step``."""
    spe = steps_per_epoch(n_train, args)
    epoch, k = divmod(step, spe)
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(args.seed * 1009 + epoch)).tolist()
    size = args.batch_size * args.grad_accum * args.world_size
    return perm[k * size : (k + 1) * size]


def count_targets(items: list, kind: str) -> int:
    return sum(e.n_target for e in items) if kind == "sft" else len(items)


class Trainer:
    """Runs optimizer steps on ``model`` (adapter attached) over ``train`` / ``val`` items."""

    def __init__(self, model: nn.Module, params: list[tuple[str, nn.Parameter]], args: TrainArgs, pad_id: int,
                 reference: Callable, head: nn.Module | None = None, dist_: Dist | None = None):  # fmt: skip
        self.model = model
        self.params = params
        self.args = args
        self.pad_id = pad_id
        self.reference = reference  # a context manager factory: the base model (DPO)
        self.head = head
        self.dist = dist_ or Dist()
        self.device = model.device
        # On the CPU the fused AdamW (one kernel over all tensors; the same update) saves ~8 small ops per
        # LoRA tensor per step: there are hundreds. Elsewhere torch's default (foreach on CUDA).
        self.optimizer = torch.optim.AdamW(
            [p for _, p in params], lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.999), eps=1e-8,
            fused=True if self.device.type == "cpu" else None,
        )
        self._stop = False
        self._reference_logps: dict[Pair, tuple[float, float]] = {}  # DPO: pair -> (chosen, rejected) of the base

    def stop(self) -> None:
        self._stop = True

    @property
    def stopping(self) -> bool:
        return self._stop

    # --- one micro-batch --------------------------------------------------------------------

    def _sums(self, items: list) -> Sums:
        kind = self.args.kind
        if kind == "sft":
            seqs: list[Example] = items
        else:
            seqs = [p.chosen for p in items] + [p.rejected for p in items]  # chosen rows first
        ids, attn, target = (t.to(self.device) for t in collate(seqs, self.pad_id))
        if kind == "sft":
            return sft_sums(self.model, ids, attn, target)
        if kind == "dpo":
            ref = self.reference_logps(items)
            pol = pair_sequence_logps(self.model, items, self.pad_id, self.device)  # each prompt run once
            return dpo_sums(self.model, ids, attn, target, self.args.beta, self.reference, ref=ref, pol=pol)
        return reward_sums(self.model, self.head, ids, attn)

    def reference_logps(self, pairs: list[Pair]) -> torch.Tensor:
        """The reference's sequence log-probs of ``pairs``: [2P], chosen rows then rejected rows
        (what :func:`~chatcli_finetune.losses.dpo_sums` computes under ``reference()``), each pair
        computed once, on its own, and kept."""
        kept = self._reference_logps
        for pair in pairs:
            if pair not in kept:
                with torch.no_grad(), self.reference():
                    chosen, rejected = pair_sequence_logps(self.model, [pair], self.pad_id, self.device).tolist()
                kept[pair] = (chosen, rejected)  # float32 values: exact as Python floats
        values = [kept[p][0] for p in pairs] + [kept[p][1] for p in pairs]
        return torch.tensor(values, dtype=torch.float32, device=self.device)

    # --- one optimizer step -----------------------------------------------------------------

    def train_step(self, step: int, train: list, total: int) -> dict:
        """Forward/backward over this process's share of the global batch, all-reduce, AdamW."""
        a = self.args
        batch = [train[i] for i in global_batch(step, len(train), a)]
        denom = max(1, count_targets(batch, a.kind))
        micro = [batch[j * a.batch_size : (j + 1) * a.batch_size] for j in range(a.grad_accum * a.world_size)]
        self.model.train()
        for _, p in self.params:
            p.grad = None
        stats: dict[str, float] = {}
        for j in range(self.dist.rank, len(micro), self.dist.world):
            if not micro[j]:
                continue
            torch.manual_seed(a.seed * 1_000_003 + step * 1009 + j)  # dropout: same draws however split
            sums = self._sums(micro[j])
            (sums.loss / denom).backward()
            for k, v in sums.stats.items():
                stats[k] = stats.get(k, 0.0) + v
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for _, p in self.params]
        if self.dist.world > 1:
            flat = torch.cat([g.reshape(-1).float() for g in grads])
            self.dist.all_reduce(flat)
            off = 0
            for g in grads:
                g.copy_(flat[off : off + g.numel()].view_as(g))
                off += g.numel()
        for (_, p), g in zip(self.params, grads):
            p.grad = g
        keys = sorted(stats) or ["loss"]
        vec = self.dist.all_reduce(torch.tensor([stats.get(k, 0.0) for k in keys], dtype=torch.float64))
        stats = dict(zip(keys, vec.tolist()))
        lr = lr_at(step, total, a)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        grad_norm = float(torch.linalg.vector_norm(torch.stack([g.float().norm() for g in grads])))
        self.optimizer.step()
        n = len(batch)
        out = {"loss": stats["loss"] / denom, "lr": lr, "grad_norm": grad_norm, "tokens": int(stats.get("tokens", 0))}
        out.update(self.step_metrics(stats, n))
        return out

    def step_metrics(self, stats: dict[str, float], n: int) -> dict:
        """The kind's own metrics of one step, from the step's summed stats over ``n`` examples."""
        if self.args.kind == "sft":
            return {}
        return {"margin": stats.get("margin", 0.0) / n, "accuracy": stats.get("accuracy", 0.0) / n}

    # --- validation -------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, items: list) -> dict:
        """Mean loss (and for pairs: margin, accuracy) over ``items``, in eval mode."""
        if not items:
            return {}
        self.model.eval()
        total: dict[str, float] = {}
        for j in range(0, len(items), self.args.batch_size):
            s = self._sums(items[j : j + self.args.batch_size])
            for k, v in s.stats.items():
                total[k] = total.get(k, 0.0) + v
        denom = max(1, count_targets(items, self.args.kind))
        out = {"val_loss": total["loss"] / denom}
        if self.args.kind != "sft":
            out["val_margin"] = total.get("margin", 0.0) / len(items)
            out["val_accuracy"] = total.get("accuracy", 0.0) / len(items)
        return out

    # --- the loop ---------------------------------------------------------------------------

    def run(self, train: list, val: list, state: LoopState, on_step: Callable[[dict], None],
            on_checkpoint: Callable[[int], None]) -> LoopState:  # fmt: skip
        a = self.args
        total = total_steps(len(train), a)
        spe = steps_per_epoch(len(train), a)
        start = time.perf_counter() - state.elapsed
        with kept_heap():  # every step reuses the last one's pages (chatcli.model.training.kept_heap)
            while state.step < total and not self._stop:
                m = self.train_step(state.step, train, total)
                state.step += 1
                state.tokens += m["tokens"]
                now = time.perf_counter() - start
                state.elapsed = now
                done_here = max(1e-9, now)
                m.update(
                    step=state.step, total_steps=total, epoch=round(state.step / spe, 4), tokens_total=state.tokens,
                    tokens_per_s=state.tokens / done_here, elapsed_s=round(now, 3),
                    eta_s=round(now / state.step * (total - state.step), 1),
                )  # fmt: skip
                last = state.step == total
                epoch_end = state.step % spe == 0
                evaluate = last or (a.eval_every and state.step % a.eval_every == 0) or (not a.eval_every and epoch_end)
                if val and evaluate:
                    m.update(self.evaluate(val))
                state.history.append(m)
                on_step(m)
                if not last and (state.step % a.save_every == 0 or self._stop):
                    on_checkpoint(state.step)
        return state
