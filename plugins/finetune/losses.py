"""The three objectives, as sums over a micro-batch (the trainer divides by the global count).

Returning sums, not means, is what makes gradient accumulation and data-parallel
training exact: the trainer divides every micro-batch's sum by the number of
targets (tokens or pairs) in the whole global batch, so the accumulated gradient
equals the gradient of the global mean, however the batch is split.

* SFT: Σ −log p(token) over target tokens.
* DPO (Rafailov et al. 2023): Σ −log σ(β·[(log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))]),
  sequence log-probs summed over completion tokens; π_ref is the same model with the
  adapter switched off (computed without gradients).
* Reward (Bradley–Terry): Σ −log σ(r(c) − r(r)), r = the score head on the last real
  token's final hidden state.

Speed (the losses are unchanged): the LM head and its log-softmax run only on the
positions whose next token is trained (:func:`target_logprobs`; SFT's prompt and every
DPO prompt need no logits, and at a 49k vocabulary the head is a fifth of the forward
FLOPs and most of the activation memory), and right-padded rows (what
:func:`~chatcli_finetune.data.collate` builds) run with causal attention and no mask
(:func:`model_mask`): a real token only sees real tokens before it either way. The log-prob of
each target comes from :func:`picked_logprob`, whose backward reuses the log-softmax it kept. The DPO
reference's sequence log-probs may be given (``dpo_sums(..., ref=)``: the trainer keeps
them per pair, the reference being frozen).

The per-pair formulas are :func:`dpo_losses` and :func:`bradley_terry_losses`, on
plain tensors, so ``tests/finetune/test_losses_vs_trl.py`` checks them against TRL's
own loss code; the GRPO objective of ``finetune rl`` is :mod:`chatcli_finetune.rl.grpo`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn



@dataclass
class Sums:
    """A micro-batch's loss sum (with grad) and its detached statistics (sums, for all-reduce)."""

    loss: torch.Tensor
    count: int  # targets in this micro-batch (tokens for SFT, pairs otherwise)
    stats: dict[str, float]


def model_mask(attn: torch.Tensor) -> torch.Tensor | None:
    """The attention mask to give the model for ``attn`` [B, S]: None when every row is right-padded
    (its real tokens first), else ``attn``. With right padding a real token attends only to real
    tokens before it, and its positions count from 0 either way, so the causal kernel (no mask
    tensor, half the attention work) gives real tokens the values the mask would; padding
    positions get other values, which no loss reads."""
    if attn.shape[1] < 2 or bool((attn[:, 1:] <= attn[:, :-1]).all()):
        return None
    return attn


class PickedLogProb(torch.autograd.Function):
    """``apply(logits [N, V] float, targets [N] int64)`` -> log_softmax(logits)[n, targets[n]], [N].

    ``-F.cross_entropy(logits, targets, reduction="none")`` gives the same values through two autograd
    nodes whose backward allocate two [N, V] tensors (nll's zero-filled gradient, log-softmax's result)
    and pass over them three times: 50 MB each for 256 trained positions at a 49k vocabulary. This
    keeps the log-softmax it computed (its own tensor, never seen outside) and turns it into the
    gradient in place, ``-g·softmax`` plus ``g`` at each target: two passes, no new [N, V] memory.
    Its backward may run once (every loss here is used once); a second raises instead of reading the
    overwritten softmax."""

    @staticmethod
    def forward(ctx, logits, targets):
        logp = torch.log_softmax(logits, dim=-1)  # [N, V], ours alone: backward overwrites it
        ctx.save_for_backward(logp, targets)
        ctx.spent = False
        return logp.gather(-1, targets[:, None]).squeeze(-1)

    @staticmethod
    def backward(ctx, g):
        if ctx.spent:
            raise RuntimeError("PickedLogProb's backward ran twice: its saved softmax is already the gradient")
        ctx.spent = True
        logp, targets = ctx.saved_tensors
        grad = logp.exp_().mul_(-g[:, None])  # d/dlogits of log p_t = onehot(t) - softmax
        grad.scatter_add_(-1, targets[:, None], g[:, None].to(grad.dtype))
        return grad, None


def picked_logprob(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(targets) [N] from logits [N, V] (float32): see :class:`PickedLogProb`."""
    return PickedLogProb.apply(logits, targets)


def target_logprobs(model: nn.Module, ids: torch.Tensor, attn: torch.Tensor, trained: torch.Tensor) -> torch.Tensor:
    """log p(ids[:, t] | ids[:, :t]) of each trained token, [N] in float32, in row-major order of
    ``trained`` [B, S-1] (entry t-1 says whether ids[:, t] is trained). The head and the
    log-softmax run on those N positions only; the values are those of :func:`token_logprobs`."""
    pos = torch.cat([trained, trained.new_zeros(trained.shape[0], 1)], dim=1)  # [B, S]: position t predicts t + 1
    logits = model(ids, attention_mask=model_mask(attn), positions=pos)  # [N, V]
    # -cross_entropy's values (log_softmax, the target's entry), with a backward that allocates no [N, V]
    return picked_logprob(logits.float(), ids[:, 1:][trained])  # [N]


def token_logprobs(model: nn.Module, ids: torch.Tensor, attn: torch.Tensor,
                   trained: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """log p(ids[:, t] | ids[:, :t]) for t >= 1: [B, S-1] in float32. With ``trained`` [B, S-1],
    only those entries are computed (:func:`target_logprobs`); the others are 0."""
    if trained is not None:
        lp = target_logprobs(model, ids, attn, trained)
        rows, cols = trained.nonzero(as_tuple=True)
        return lp.new_zeros(trained.shape).index_put((rows, cols), lp)
    logits = model(ids, attention_mask=model_mask(attn))  # [B, S, V]
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # [B, S-1, V]
    return logp.gather(-1, ids[:, 1:, None]).squeeze(-1)  # [B, S-1]


def trained_mask(attn: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B, S-1]: whether the prediction at position t (of ids[:, t + 1]) is trained."""
    return target[:, 1:] & attn[:, 1:].bool()


def sft_sums(model: nn.Module, ids: torch.Tensor, attn: torch.Tensor, target: torch.Tensor) -> Sums:
    # target [B, S]: whether ids[:, t] is trained; position t is predicted from t-1.
    t = trained_mask(attn, target)
    loss = -target_logprobs(model, ids, attn, t).sum()
    n = int(t.sum())
    return Sums(loss, n, {"loss": float(loss.detach()), "tokens": float(attn.sum())})


def sequence_logps(model: nn.Module, ids: torch.Tensor, attn: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Σ log p over each row's target tokens: [B]."""
    t = trained_mask(attn, target)
    lp = target_logprobs(model, ids, attn, t)  # [N]
    rows = t.nonzero(as_tuple=True)[0]  # [N]: the row of each value
    return lp.new_zeros(ids.shape[0]).index_add(0, rows, lp)


def dpo_losses(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-pair DPO loss [P] from log π(y) − log π_ref(y) of the chosen and rejected answers [P]."""
    return -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))


def bradley_terry_losses(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """Per-pair reward-model loss [P]: −log σ(r(chosen) − r(rejected))."""
    return -F.logsigmoid(chosen_rewards - rejected_rewards)


def dpo_sums(
    model: nn.Module,
    ids: torch.Tensor,
    attn: torch.Tensor,
    target: torch.Tensor,
    beta: float,
    reference: Callable[[], AbstractContextManager],
    ref: torch.Tensor | None = None,
    pol: torch.Tensor | None = None,
) -> Sums:
    """Rows [0, P) are chosen, [P, 2P) the matching rejected answers. ``ref`` [2P]: the reference's
    sequence log-probs of those rows when known (else computed here under ``reference()``); ``pol``
    [2P], with gradients: the policy's, when computed elsewhere (a shared prompt run once)."""
    P = ids.shape[0] // 2
    if ref is None:
        with torch.no_grad(), reference():
            ref = sequence_logps(model, ids, attn, target)  # [2P]
    if pol is None:
        pol = sequence_logps(model, ids, attn, target)  # [2P]
    chosen = pol[:P] - ref[:P]  # implicit rewards / beta
    rejected = pol[P:] - ref[P:]
    loss = dpo_losses(chosen, rejected, beta).sum()  # [P] -> sum
    margin = (beta * (chosen - rejected)).detach()
    stats = {
        "loss": float(loss.detach()),
        "margin": float(margin.sum()),
        "accuracy": float((margin > 0).float().sum()),
        "chosen_reward": float((beta * chosen).detach().sum()),
        "rejected_reward": float((beta * rejected).detach().sum()),
        "tokens": float(attn.sum()),
    }
    return Sums(loss, P, stats)


def last_token_hidden(model: nn.Module, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """The final hidden state of each row's last real token: [B, D] (right padding)."""
    h = model.hidden_states(ids, attention_mask=model_mask(attn))  # [B, S, D]
    last = attn.sum(-1) - 1  # [B]
    return h[torch.arange(ids.shape[0], device=ids.device), last]


def rewards(model: nn.Module, head: nn.Module, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """Scalar rewards [B]."""
    h = last_token_hidden(model, ids, attn).float()
    return head(h).squeeze(-1)


def reward_sums(model: nn.Module, head: nn.Module, ids: torch.Tensor, attn: torch.Tensor) -> Sums:
    P = ids.shape[0] // 2
    r = rewards(model, head, ids, attn)  # [2P]
    diff = r[:P] - r[P:]
    loss = bradley_terry_losses(r[:P], r[P:]).sum()
    d = diff.detach()
    stats = {
        "loss": float(loss.detach()),
        "margin": float(d.sum()),
        "accuracy": float((d > 0).float().sum()),
        "tokens": float(attn.sum()),
    }
    return Sums(loss, P, stats)
