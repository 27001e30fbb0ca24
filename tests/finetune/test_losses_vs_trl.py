"""The three objectives equal TRL's own loss code on fixed tensors (TRL is the oracle, never re-typed).

What is called, exactly (TRL 1.16):

* DPO: ``trl.DPOTrainer._compute_loss(self, model, inputs, return_outputs=False)``, unbound, with
  ``self`` a stand-in holding only what the method reads (``beta``, ``loss_types=["sigmoid"]``,
  ``f_divergence_type="reverse_kl"``, ``precompute_ref_logps=True``, a pass-through accelerator,
  metric dicts) and ``model`` a stand-in whose output's ``log_probs`` are the fixed per-token
  log-probs (0 where the label is masked, as TRL's fused head returns them); the reference
  log-probs come in ``inputs`` (``ref_chosen_logps``/``ref_rejected_logps``). Compared with
  :func:`chatcli_finetune.losses.dpo_losses` (mean over pairs).
* Reward model: ``trl.RewardTrainer.compute_loss(self, model, inputs)``, unbound, ``model`` a
  stand-in returning the fixed scores as ``logits`` [2P, 1] (chosen rows first). Compared with
  :func:`chatcli_finetune.losses.bradley_terry_losses`.
* GRPO: ``trl.GRPOTrainer._compute_loss(self, model, inputs)``, unbound, ``loss_type="grpo"``,
  ε = 0.2 both sides, token-level importance sampling, with ``self._get_per_token_logps_and_entropies``
  returning the fixed policy log-probs (a leaf tensor with gradients) and the reference and old
  log-probs in ``inputs``. Compared with :func:`chatcli_finetune.rl.grpo.sequence_losses` (mean
  over sequences): the loss, its gradient with respect to the log-probs, and TRL's logged
  ``kl`` metric against :func:`chatcli_finetune.rl.grpo.k3`. The advantages are compared with
  TRL's formula written from its ``trl.trainer.utils.nanstd`` (TRL computes them inline in
  ``_generate_and_score_completions``, which cannot run without a model and a dataset).
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch

trl = pytest.importorskip("trl")
from trl import DPOTrainer, GRPOTrainer, RewardTrainer  # noqa: E402
from trl.trainer.utils import nanstd  # noqa: E402

from chatcli_finetune.losses import bradley_terry_losses, dpo_losses  # noqa: E402
from chatcli_finetune.rl.grpo import group_advantages, k3, sequence_losses  # noqa: E402


def _accelerator():
    same = lambda t, *a, **k: t  # noqa: E731  one process: gathering and reducing change nothing
    return SimpleNamespace(device=torch.device("cpu"), gather=same, gather_for_metrics=same, reduce=same,
                           unwrap_model=same, autocast=nullcontext, num_processes=1, sync_gradients=True)  # fmt: skip


def _metrics():
    return defaultdict(lambda: defaultdict(list))


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_loss_equals_trl(beta):
    g = _seeded(0)
    P, S = 3, 7
    mask = torch.zeros(2 * P, S, dtype=torch.long)
    for row, start in enumerate([2, 3, 2, 4, 1, 3]):  # prompt tokens first, then the answer
        mask[row, start:] = 1
    shifted = mask[:, 1:].bool()  # position t predicts token t + 1
    per_token = -torch.rand(2 * P, S - 1, generator=g) * 3 * shifted  # 0 where the label is masked
    ref = -torch.rand(2 * P, generator=g) * 10
    stand_in = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=_accelerator(), aux_loss_enabled=False, ld_alpha=None,
        precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=["sigmoid"], loss_weights=[1.0],
        beta=beta, use_weighting=False, _metrics=_metrics(), _total_train_tokens=0, _tp_size=1,
        args=SimpleNamespace(gradient_checkpointing_kwargs=None),
    )  # fmt: skip
    zeros = torch.zeros(2 * P, S - 1)
    model = lambda **kw: SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros,  # noqa: E731
                                         is_top1=zeros.bool())  # fmt: skip
    inputs = {"input_ids": torch.arange(2 * P * S).view(2 * P, S) % 50, "attention_mask": torch.ones(2 * P, S, dtype=torch.long),
              "completion_mask": mask, "ref_chosen_logps": ref[:P], "ref_rejected_logps": ref[P:]}  # fmt: skip
    theirs = DPOTrainer._compute_loss(stand_in, model, inputs, return_outputs=False)

    pol = (per_token * shifted).sum(-1)  # what chatcli's sequence_logps sums: answer tokens only
    ours = dpo_losses(pol[:P] - ref[:P], pol[P:] - ref[P:], beta).mean()
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)


def test_reward_model_loss_equals_trl():
    scores = torch.randn(8, 1, generator=_seeded(1))  # 4 chosen rows, then their 4 rejected rows
    stand_in = SimpleNamespace(model=SimpleNamespace(training=True), accelerator=_accelerator(),
                               args=SimpleNamespace(center_rewards_coefficient=None), _metrics=_metrics(),
                               _total_train_tokens=0, _tp_size=1)  # fmt: skip
    model = lambda **kw: SimpleNamespace(logits=scores)  # noqa: E731
    theirs = RewardTrainer.compute_loss(stand_in, model, {"input_ids": torch.zeros(8, 3, dtype=torch.long),
                                                          "attention_mask": torch.ones(8, 3, dtype=torch.long)})  # fmt: skip
    ours = bradley_terry_losses(scores[:4, 0], scores[4:, 0]).mean()
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    assert stand_in._metrics["train"]["accuracy"] == [float((scores[:4] > scores[4:]).float().mean())]


def _grpo_case(seed: int, B: int = 6, T: int = 5):
    g = _seeded(seed)
    logps = (-torch.rand(B, T, generator=g) * 4).requires_grad_(True)
    ref = logps.detach() + torch.randn(B, T, generator=g) * 0.3
    old = logps.detach() + torch.randn(B, T, generator=g) * 0.4  # far enough from 1 that the clip bites
    mask = torch.ones(B, T, dtype=torch.long)
    for row, n in enumerate([5, 3, 1, 4, 2, 5][:B]):  # answers of different lengths, right-padded
        mask[row, n:] = 0
    adv = torch.randn(B, generator=g)
    return logps, ref, old, mask, adv


def _trl_grpo(logps, ref, old, mask, adv, beta):
    B, T = logps.shape
    stand_in = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, torch.zeros(B, T), None),
        top_entropy_quantile=1.0, aux_loss_enabled=False, off_policy_mask_threshold=None,
        importance_sampling_level="token", beta=beta, loss_type="grpo", epsilon_low=0.2, epsilon_high=0.2,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None), use_vllm=False,
        vllm_importance_sampling_correction=False, model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1, _entropy_bonus_enabled=False, _metrics=_metrics(),
        accelerator=_accelerator(),
    )  # fmt: skip
    inputs = {"prompt_ids": torch.zeros(B, 2, dtype=torch.long), "prompt_mask": torch.ones(B, 2, dtype=torch.long),
              "completion_ids": torch.zeros(B, T, dtype=torch.long), "completion_mask": mask, "advantages": adv,
              "old_per_token_logps": old, "ref_per_token_logps": ref}  # fmt: skip
    return GRPOTrainer._compute_loss(stand_in, None, inputs), stand_in._metrics["train"]


@pytest.mark.parametrize("beta", [0.0, 0.04, 0.5])
def test_grpo_loss_and_gradient_equal_trl(beta):
    logps, ref, old, mask, adv = _grpo_case(2)
    theirs, metrics = _trl_grpo(logps, ref, old, mask, adv, beta)
    (g_theirs,) = torch.autograd.grad(theirs, logps)
    ours = sequence_losses(logps, old, ref, adv, mask, beta).mean()
    (g_ours,) = torch.autograd.grad(ours, logps)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-6, atol=1e-8)
    assert metrics["clip_ratio/region_mean"][0] > 0  # the case exercises the clip
    if beta:
        m = mask.bool()
        torch.testing.assert_close(k3(logps.detach(), ref)[m].mean().item(), metrics["kl"][0], rtol=1e-6, atol=1e-8)


def test_grpo_on_policy_equals_trl_without_old_logps():
    """One update per sampled batch: TRL takes π_old = π_θ.detach(), as finetune rl does."""
    logps, ref, _, mask, adv = _grpo_case(3)
    theirs, _ = _trl_grpo(logps, ref, None, mask, adv, 0.04)
    ours = sequence_losses(logps, logps.detach(), ref, adv, mask, 0.04).mean()
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)


def test_group_advantages_equal_trls_formula():
    G = 4
    rewards = torch.tensor([0.0, -1.0, -0.5, 0.0, 1.0, 1.0, 1.0, 1.0, 3.0, -2.0, 0.25, 7.0])
    grouped = rewards.view(-1, G)
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(G)
    std = nanstd(grouped, dim=1).repeat_interleave(G)
    theirs = (rewards - mean) / (std + 1e-4)
    ours = group_advantages(grouped).reshape(-1)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert torch.allclose(ours.view(-1, G).sum(-1), torch.zeros(3), atol=1e-5)
    assert torch.equal(ours[4:8], torch.zeros(4))  # identical rewards teach nothing
