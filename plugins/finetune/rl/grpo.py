"""GRPO's maths on plain tensors: group-normalised advantages and the clipped objective with a KL penalty.

For one prompt, G answers are sampled and graded (rewards r_1..r_G). Each answer's
*advantage* is how much better than its group it did, in the group's units::

    A_i = (r_i − mean(r)) / (std(r) + 1e-4)        (std unbiased, as TRL's ``nanstd``)

so the advantages of a group sum to zero: a group whose answers all score the same
teaches nothing. Every token of answer i shares A_i. The per-token objective is PPO's
clipped surrogate plus a KL penalty to the reference model (the base, adapter off)::

    ρ_t   = π_θ(y_t | ·) / π_old(y_t | ·)
    loss_t = −min(ρ_t·A_i, clip(ρ_t, 1−ε, 1+ε)·A_i) + β·KL_t
    KL_t  = exp(log π_ref − log π_θ) − (log π_ref − log π_θ) − 1      (the "k3" estimator)

k3 is an unbiased, always non-negative estimate of KL(π_θ ‖ π_ref) from the sampled
token alone (no sum over the vocabulary). A sequence's loss is the mean over its
tokens; the batch loss is the mean over sequences — TRL's ``loss_type="grpo"``.
``tests/finetune/test_losses_vs_trl.py`` checks these functions against TRL's
``GRPOTrainer._compute_loss``. With one optimizer step per sampled batch (what
``finetune rl`` does) π_old is π_θ itself, so ρ = 1 and the clip only bounds the
gradient's direction; the clip matters when a batch is reused (``old_logps`` given).
"""

from __future__ import annotations

import torch

EPSILON = 0.2  # PPO's clip range
ADVANTAGE_EPS = 1e-4  # TRL's: a group with identical rewards gets advantages 0, not NaN


def group_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """(r − mean) / (std + eps) within each group: rewards [..., G] -> advantages [..., G]."""
    r = rewards.double()
    mean = r.mean(-1, keepdim=True)
    std = r.std(-1, keepdim=True, unbiased=True) if r.shape[-1] > 1 else torch.zeros_like(mean)
    return ((r - mean) / (std + ADVANTAGE_EPS)).to(rewards.dtype if rewards.is_floating_point() else torch.float32)


def k3(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token KL(π_θ ‖ π_ref) estimate from the sampled tokens' log-probs (nats, >= 0)."""
    d = ref_logps - logps
    return torch.exp(d) - d - 1


def sequence_losses(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    epsilon: float = EPSILON,
) -> torch.Tensor:
    """Each sequence's GRPO loss [B]: the masked token mean of the clipped surrogate + β·k3.

    logps, old_logps, ref_logps: [B, T] log-probs of the sampled tokens (policy with
    gradients, the policy that sampled, the reference); advantages [B]; mask [B, T]
    (1 on answer tokens). ``ref_logps`` may be None when ``beta`` is 0.
    """
    ratio = torch.exp(logps - old_logps)  # [B, T]
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon)
    adv = advantages[:, None]  # [B, 1]
    per_token = -torch.min(ratio * adv, clipped * adv)  # [B, T]
    if beta != 0.0:
        per_token = per_token + beta * k3(logps, ref_logps)
    m = mask.to(per_token.dtype)
    return (per_token * m).sum(-1) / m.sum(-1).clamp(min=1.0)
