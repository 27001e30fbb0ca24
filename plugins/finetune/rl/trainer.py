"""GRPO inside the shared training loop: each micro-batch samples, grades and learns from its groups.

:class:`RLTrainer` is the shared :class:`chatcli_finetune.trainer.Trainer` (global
batches, accumulation, AdamW on the LoRA, checkpoints, ``stop()``) with one
micro-batch's work replaced. For each prompt of the micro-batch it

1. samples G answers with the policy (the model with the training adapter on, dropout
   off) in one batch, through the engine — the same batched candidates ``/rank`` draws
   (:func:`chatcli_rank.candidates.generate_candidates`), at the run's temperature, with
   seeds drawn from (seed, step, prompt), so a resumed run samples what an uninterrupted
   one would;
2. grades them (:mod:`chatcli_finetune.rl.graders`) and turns the rewards into
   group-normalised advantages (:func:`chatcli_finetune.rl.grpo.group_advantages`);
3. runs the policy (with gradients) and the reference (the adapter switched off) over
   prompt + answer and returns the GRPO loss (:func:`chatcli_finetune.rl.grpo.sequence_losses`)
   summed over prompts of the mean over each prompt's answers; the loop divides by the
   number of prompts in the global batch, so the step's loss is the mean over all answers.

An answer that ended by itself is trained with its end-of-turn token (that is how a
policy learns *when to stop*); one cut at ``--max-new-tokens`` is not. The engine's
prefix cache is dropped before every sampling: the optimizer changed the weights in
place, which the adapter manager's version counter does not see. Every step's groups
go to ``OUT/groups.jsonl`` (:mod:`chatcli_finetune.rl.groups`). Under ``torchrun`` each process
samples and grades its share of the global batch (the shared loop's split), gradients and
statistics are summed across processes, and the first process logs every process's groups.

Step metrics: ``loss``, ``reward`` (mean over the step's answers), ``reward_std`` (the
mean spread inside a group: 0 means nothing to learn), ``kl`` (the mean per-token k3
estimate of KL(policy ‖ reference) on the sampled answers, in bits), ``answer_tokens``
and ``stopped`` (the share of answers that ended by themselves). Validation
(:meth:`RLTrainer.evaluate`): the held-out prompts' greedy answers, ``val_reward`` and
the exact ``val_kl`` in bits (:mod:`chatcli_finetune.rl.evaluate`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from chatcli.engine.params import SamplingParams
from chatcli_finetune.data import Example, collate
from chatcli_finetune.losses import Sums, token_logprobs
from chatcli_finetune.rl.args import RLArgs
from chatcli_finetune.rl.graders import Grader
from chatcli_finetune.rl.grpo import group_advantages, k3, sequence_losses
from chatcli_finetune.rl.groups import GroupLog
from chatcli_finetune.trainer import Dist, Trainer

LN2 = math.log(2)


@dataclass(frozen=True)
class RLPrompt:
    """One training prompt: its messages (ending with the user's) and their token ids."""

    index: int  # position in the prompts file's usable prompts: part of the sampling seed
    messages: tuple[dict, ...]
    ids: tuple[int, ...]  # the rendered conversation with the generation prompt
    line: int = 0

    @property
    def question(self) -> str:
        return self.messages[-1]["content"]


def sampling_seed(seed: int, step: int, index: int) -> int:
    """The first answer's seed for prompt ``index`` at optimizer step ``step`` (answer i: + i)."""
    return (seed * 1_000_003 + step * 100_003 + index * 101) % 2**62


class RLTrainer(Trainer):
    def __init__(self, engine, params, args: RLArgs, pad_id: int, eos_id: int, grader: Grader,
                 reference: Callable, log: GroupLog | None = None, dist_: Dist | None = None):  # fmt: skip
        super().__init__(engine.model, params, args, pad_id, reference, dist_=dist_)
        self.engine = engine
        self.grader = grader
        self.eos_id = eos_id
        self.log = log
        self._step = 0
        self._groups: list[dict] = []

    def sampling(self, temperature: float | None = None) -> SamplingParams:
        a = self.args
        return SamplingParams(temperature=a.temperature if temperature is None else temperature,
                              max_tokens=a.max_new_tokens, top_n=0)  # fmt: skip

    # --- one step ---------------------------------------------------------------------------

    def train_step(self, step: int, train: list, total: int) -> dict:
        self._step, self._groups = step, []
        m = super().train_step(step, train, total)
        groups = self._groups
        if self.dist.world > 1:  # each process sampled its share of the prompts: the log holds them all
            shares: list = [None] * self.dist.world
            dist.all_gather_object(shares, groups)
            groups = sorted((g for share in shares for g in share), key=lambda g: g["prompt_index"])
        if self.log is not None and self.dist.main:
            self.log.append(groups)
        return m

    def _group(self, item: RLPrompt) -> tuple[list[Example], list[float], dict]:
        """Sample, grade and score one prompt's group: its rows, advantages and log record."""
        from chatcli_rank.candidates import generate_candidates

        a = self.args
        self.engine.generator.reset()  # the weights changed in place since the cache was filled
        cands = generate_candidates(self.engine, list(item.messages), self.sampling(), a.group_size,
                                    temperatures=(a.temperature,), base_seed=sampling_seed(a.seed, self._step, item.index))  # fmt: skip
        rewards = self.grader.score(list(item.messages), [c.text for c in cands])
        adv = group_advantages(torch.tensor(rewards, dtype=torch.float64)).tolist()
        rows = []
        for c in cands:
            answer = [s.id for s in c.steps] + ([self.eos_id] if c.finish_reason == "stop" else [])
            rows.append(Example(ids=item.ids + tuple(answer), mask=(False,) * len(item.ids) + (True,) * len(answer)))
        mean = sum(rewards) / len(rewards)
        std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / (len(rewards) - 1))
        record = {
            "step": self._step + 1, "prompt": item.question, "prompt_index": item.index,
            "mean_reward": mean, "std_reward": std,
            "answers": [{"text": c.text, "reward": r, "advantage": A, "tokens": c.tokens, "finish_reason": c.finish_reason}
                        for c, r, A in zip(cands, rewards, adv)],
        }  # fmt: skip
        return rows, adv, record

    def _sums(self, items: list[RLPrompt]) -> Sums:
        a = self.args
        model = self.model
        was_training = model.training
        model.eval()  # sample the policy as it is (no dropout)
        rows: list[Example] = []
        advs: list[float] = []
        records = []
        try:
            with torch.no_grad():
                for item in items:
                    r, adv, rec = self._group(item)
                    rows += r
                    advs += adv
                    records.append(rec)
        finally:
            model.train(was_training)
        self._groups += records
        ids, attn, target = (t.to(self.device) for t in collate(rows, self.pad_id))  # [B, S], B = prompts x G
        mask = target[:, 1:] & attn[:, 1:].bool()  # [B, S-1]: the answer tokens (position t predicts t + 1)
        # the head only on the answer tokens (the prompts carry no loss); the other entries are 0
        with torch.no_grad(), self.reference():
            ref = token_logprobs(model, ids, attn, mask)  # [B, S-1]
        logps = token_logprobs(model, ids, attn, mask)  # [B, S-1], with gradients
        adv_t = torch.tensor(advs, dtype=logps.dtype, device=logps.device)  # [B]
        per_seq = sequence_losses(logps, logps.detach(), ref, adv_t, mask, a.beta)  # [B]; on-policy: ρ = 1
        loss = per_seq.sum() / a.group_size  # each prompt's mean over its answers, summed over prompts
        kl = k3(logps.detach(), ref)[mask]
        rewards = [x["reward"] for rec in records for x in rec["answers"]]
        stats = {
            "loss": float(loss.detach()), "tokens": float(attn.sum()), "reward": sum(rewards),
            "reward_std": sum(rec["std_reward"] for rec in records), "kl_nats": float(kl.sum()),
            "kl_tokens": float(mask.sum()), "stopped": float(sum(x["finish_reason"] == "stop" for rec in records for x in rec["answers"])),
        }  # fmt: skip
        return Sums(loss, len(items), stats)

    def step_metrics(self, stats: dict[str, float], n: int) -> dict:
        answers = max(1, n * self.args.group_size)
        return {
            "reward": stats.get("reward", 0.0) / answers, "reward_std": stats.get("reward_std", 0.0) / max(1, n),
            "kl": stats.get("kl_nats", 0.0) / max(1.0, stats.get("kl_tokens", 0.0)) / LN2,
            "answer_tokens": stats.get("kl_tokens", 0.0) / answers, "stopped": stats.get("stopped", 0.0) / answers,
        }  # fmt: skip

    # --- validation -------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, items: list) -> dict:
        """Greedy answers to the held-out prompts: mean reward and exact per-token KL (bits)."""
        if not items:
            return {}
        from chatcli_finetune.rl.evaluate import held_out

        result = held_out(self.engine, self.grader, [list(p.messages) for p in items], self.args.max_new_tokens,
                          self.reference)  # fmt: skip
        return {"val_reward": result.mean_reward, "val_kl": result.kl_bits, "val_words": result.mean_words}
