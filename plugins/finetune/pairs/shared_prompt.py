"""A DPO pair's chosen and rejected rows share their prompt: run it through the model once.

Both rows start with the same prompt tokens, and a causal model's hidden states (and its
keys and values) at a position depend only on the tokens up to it, so the shared part
computed once serves both rows exactly. :func:`pair_sequence_logps` runs each pair's
shared prefix once (rows [P, K]), keeps every layer's keys and values (with their
gradients), then runs the two rows' remainders [2P, S'] attending to them. The sums of
log-probs and their gradients are those of two whole rows (float rounding aside), with
P·K fewer tokens through the model, forward and backward: a quarter of a DPO step when
the prompt is as long as the answers, more for long prompts and short answers.

The shared prefix ends before the token that predicts either row's first trained token,
so every trained prediction is made in the rows' own parts, where the head runs (only on
those positions, as :func:`chatcli_finetune.losses.target_logprobs`). Pairs with no such
prefix, or a model set to recompute activations (gradient checkpointing only runs
without a cache), take the plain path: the two whole rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from chatcli_finetune.data import Example, Pair, collate
from chatcli_finetune.losses import model_mask, picked_logprob, sequence_logps, trained_mask


def shared_length(pair: Pair) -> int:
    """Tokens the two rows can share: their common prefix, up to the position before the one that
    predicts the first trained token of either row (0: nothing to share)."""
    a, b = pair.chosen, pair.rejected
    first = min(_first_trained(a), _first_trained(b))  # that token is predicted at first - 1
    k = 0
    limit = min(len(a.ids), len(b.ids), first - 1)
    while k < limit and a.ids[k] == b.ids[k]:
        k += 1
    return k


def _first_trained(e: Example) -> int:
    return next((i for i, m in enumerate(e.mask) if m and i > 0), len(e.ids))


class _KeepKV:
    """A stand-in for the model's KV cache that keeps each layer's keys and values of the prefix
    (with their gradients) instead of copying them into a buffer."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.length = 0
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def ensure(self, total_len: int) -> None:
        pass

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.kv[layer_idx] = (k, v)
        return k, v

    def advance(self, n: int) -> None:
        self.length += n


class _AfterPrefix:
    """The rows' remainders see their pair's prefix keys/values (row i of 2P reads prefix row i mod P)."""

    def __init__(self, kept: _KeepKV, rows: torch.Tensor, length: int):
        self.kept = kept
        self.rows = rows  # [2P]
        self.batch_size = int(rows.shape[0])
        self.length = length

    def ensure(self, total_len: int) -> None:
        pass

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pk, pv = self.kept.kv[layer_idx]  # [P, KV, K, Dh]
        return torch.cat([pk[self.rows], k], dim=2), torch.cat([pv[self.rows], v], dim=2)

    def advance(self, n: int) -> None:
        self.length += n


def pair_sequence_logps(model: nn.Module, pairs: Sequence[Pair], pad_id: int, device: torch.device) -> torch.Tensor:
    """Σ log p over each row's trained tokens, [2P]: the chosen rows, then the rejected rows in the same
    order (what :func:`~chatcli_finetune.losses.sequence_logps` gives for the collated rows)."""
    ks = [shared_length(p) for p in pairs]
    if min(ks) < 1 or getattr(model, "gradient_checkpointing", False):
        rows = [p.chosen for p in pairs] + [p.rejected for p in pairs]
        ids, attn, target = (t.to(device) for t in collate(rows, pad_id))
        return sequence_logps(model, ids, attn, target)
    P = len(pairs)
    prefix = [Example(p.chosen.ids[:k], p.chosen.mask[:k]) for p, k in zip(pairs, ks)]
    rest = [Example(p.chosen.ids[k:], p.chosen.mask[k:]) for p, k in zip(pairs, ks)]
    rest += [Example(p.rejected.ids[k:], p.rejected.mask[k:]) for p, k in zip(pairs, ks)]
    pids, pattn, _ = (t.to(device) for t in collate(prefix, pad_id))  # [P, K]
    ids, attn, target = (t.to(device) for t in collate(rest, pad_id))  # [2P, S']
    rows = torch.arange(P, device=device).repeat(2)  # [2P]
    kept = _KeepKV(P)
    model.hidden_states(pids, cache=kept, attention_mask=model_mask(pattn))  # fills kept (right padding: no mask)
    after = _AfterPrefix(kept, rows, pids.shape[1])
    full = torch.cat([pattn[rows], attn], dim=1)  # [2P, K + S']: padded prefix keys hidden
    mask = None if len(set(ks)) == 1 and model_mask(attn) is None else full
    t = trained_mask(attn, target)  # [2P, S'-1]; the first token of a remainder is never trained
    pos = torch.cat([t, t.new_zeros(2 * P, 1)], dim=1)
    logits = model(ids, cache=after, attention_mask=mask, positions=pos)  # [N, V]
    lp = picked_logprob(logits.float(), ids[:, 1:][t])  # [N]
    return lp.new_zeros(2 * P).index_add(0, t.nonzero(as_tuple=True)[0], lp)
