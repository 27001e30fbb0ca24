"""The training shortcuts change no loss: the head on the trained positions only gives the full
head's losses and LoRA gradients (float32 tolerance), right-padded rows need no attention mask,
the DPO reference log-probs the trainer keeps equal recomputed ones, and the trained LoRA side
path (scales on the rank-r product, one addmm, 31-bit dropout draws) is the plain formula."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from chatcli.hub.checkpoint import load_checkpoint
from chatcli.lora.manager import AdapterManager
from chatcli.model.lora_linear import LoRALinear, LoRAPair
from chatcli_finetune.args import TrainArgs
from chatcli_finetune.data import Example, Pair, collate
from chatcli_finetune.losses import model_mask, sequence_logps, sft_sums, token_logprobs
from chatcli_finetune.trainable import TRAIN_NAME, LoRASpec, attach_trainable, trainable_parameters
from chatcli_finetune.trainer import Trainer
from tests.tiny import EOS_ID


def _trainable(tiny_model_dir, seed: int = 0):
    model = load_checkpoint(tiny_model_dir)
    manager = attach_trainable(AdapterManager(model), LoRASpec(rank=4, alpha=8.0), seed=seed)
    params = trainable_parameters(model)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # B away from 0, so the adapter changes the logits and every gradient is non-trivial
        for name, p in params:
            if name.endswith("lora_B"):
                p.normal_(0.0, 0.05, generator=g)
    model.train()
    return model, manager, params


def _examples(lengths_and_prompts, seed: int = 0) -> list[Example]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for n, prompt in lengths_and_prompts:
        ids = tuple(int(i) for i in torch.randint(3, 250, (n,), generator=g))
        out.append(Example(ids, tuple(i >= prompt for i in range(n))))
    return out


def _full_head_sums(model, ids, attn, target):
    """The objective as it was written before: the head and log-softmax on every position, the mask given."""
    logits = model(ids, attention_mask=attn)  # [B, S, V]
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    t = target[:, 1:] & attn[:, 1:].bool()
    return (lp * t).sum(-1)  # [B]


def _same_grads(params, got, want) -> None:
    """Equal within float32 rounding of sums in another order: relative to each tensor's largest entry."""
    for (name, _), a, b in zip(params, got, want):
        assert float((a - b).abs().max()) <= 1e-5 * float(b.abs().max()) + 1e-7, name


def _grads(params, loss) -> list[torch.Tensor]:
    for _, p in params:
        p.grad = None
    loss.backward()
    return [p.grad.clone() for _, p in params]


def test_trained_positions_head_equals_the_full_head(tiny_model_dir):
    model, _, params = _trainable(tiny_model_dir)
    # rows of different lengths (right padding) with different prompt lengths
    ids, attn, target = collate(_examples([(11, 4), (7, 3), (9, 9), (5, 1)]), EOS_ID)
    want = _full_head_sums(model, ids, attn, target)
    want_grads = _grads(params, -want.sum())
    got = sequence_logps(model, ids, attn, target)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert got[2] == 0.0  # a row with nothing trained
    got_grads = _grads(params, -got.sum())
    _same_grads(params, got_grads, want_grads)
    assert max(float(g.abs().max()) for g in want_grads) > 1e-3  # the gradients are not trivially 0

    sums = sft_sums(model, ids, attn, target)  # SFT's sum is the same tokens' sum
    torch.testing.assert_close(sums.loss, -want.sum(), rtol=1e-5, atol=1e-5)
    assert sums.count == int((target[:, 1:] & attn[:, 1:].bool()).sum())
    sft_grads = _grads(params, sums.loss)
    _same_grads(params, sft_grads, want_grads)

    per_token = token_logprobs(model, ids, attn, target[:, 1:] & attn[:, 1:].bool())  # zeros off the trained ones
    torch.testing.assert_close(per_token.sum(-1), want, rtol=1e-5, atol=1e-5)


def test_right_padded_rows_run_without_a_mask_and_left_padded_ones_keep_it(tiny_model_dir):
    right = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    left = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    assert model_mask(right) is None and model_mask(left) is left
    model = load_checkpoint(tiny_model_dir).eval()
    ids = torch.tensor([[5, 9, 40, 7, 8], [6, 3, 77, EOS_ID, EOS_ID]])
    attn = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        masked, causal = model(ids, attention_mask=attn), model(ids)
    torch.testing.assert_close(causal[0], masked[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(causal[1, :3], masked[1, :3], rtol=1e-5, atol=1e-5)  # real tokens agree


def test_kept_reference_logps_equal_recomputed_ones_and_are_computed_once(tiny_model_dir):
    model, manager, params = _trainable(tiny_model_dir)
    ex = _examples([(9, 4), (12, 4), (6, 2), (8, 2), (10, 5), (7, 5)], seed=3)
    pairs = [Pair(ex[0], ex[1]), Pair(ex[2], ex[3]), Pair(ex[4], ex[5])]
    args = TrainArgs(kind="dpo", data="", out="", rank=4, alpha=8.0, dropout=0.0, batch_size=3, lr=1e-3)
    trainer = Trainer(model, params, args, EOS_ID, reference=lambda: manager.disabled([TRAIN_NAME]))
    calls = []
    hook = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        kept = trainer.reference_logps(pairs)
        assert len(calls) == len(pairs)  # one forward per pair, the first time
        again = trainer.reference_logps(pairs[::-1])
        assert len(calls) == len(pairs)  # then none
    finally:
        hook.remove()
    P = len(pairs)
    torch.testing.assert_close(again, torch.cat([kept[:P].flip(0), kept[P:].flip(0)]), rtol=0, atol=0)
    ids, attn, target = collate([p.chosen for p in pairs] + [p.rejected for p in pairs], EOS_ID)
    with torch.no_grad(), manager.disabled([TRAIN_NAME]):
        recomputed = sequence_logps(model, ids, attn, target)  # the whole batch at once, as dpo_sums did
        full = _full_head_sums(model, ids, attn, target)
    torch.testing.assert_close(kept, recomputed, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kept, full, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        policy = sequence_logps(model, ids, attn, target)
    assert (policy - kept).abs().max() > 1e-3  # the reference is the base, not the policy


def _pair(out_f: int = 48, in_f: int = 32, dropout: float = 0.0) -> tuple[LoRALinear, LoRAPair]:
    g = torch.Generator().manual_seed(7)
    layer = LoRALinear(torch.nn.Linear(in_f, out_f))
    pair = LoRAPair(torch.randn(4, in_f, generator=g), torch.randn(out_f, 4, generator=g), alpha=8.0)
    layer.add("t", pair)
    pair.A.requires_grad_(True)
    pair.B.requires_grad_(True)
    pair.dropout = dropout
    return layer, pair


def test_trained_side_path_is_the_plain_formula():
    layer, pair = _pair()
    layer.train()
    x = torch.randn(2, 5, 32, requires_grad=True)
    got = layer(x)
    want = F.linear(x, layer.base.weight, layer.base.bias) + F.linear(F.linear(x, pair.A), pair.B) * pair.scaling
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(got)
    got_grads = torch.autograd.grad(got, (x, pair.A, pair.B), g)
    want_grads = torch.autograd.grad(want, (x, pair.A, pair.B), g)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("p", [0.05, 0.3])
def test_trained_dropout_drops_a_p_share_and_rescales(p):
    """Each input entry is zeroed with probability p and the kept ones scaled by 1/(1-p), as F.dropout."""
    layer, pair = _pair(out_f=4, in_f=20000, dropout=p)
    layer.train()
    with torch.no_grad():
        layer.base.weight.zero_()
        layer.base.bias.zero_()
        pair.A.zero_()
        pair.B.zero_()
        pair.B[:, 0] = 1.0
    rows = 2
    x = torch.ones(rows, 20000)
    torch.manual_seed(0)
    kept = []
    for j in range(20000 // 500):  # A's row 0 reads one block of 500 inputs at a time: count what survived
        with torch.no_grad():
            pair.A.zero_()
            pair.A[0, j * 500 : (j + 1) * 500] = 1.0
        y = layer(x)[:, 0] / pair.scaling  # = Σ kept entries / (1 - p)
        kept.append(y.detach() * (1 - p))
    counts = torch.stack(kept)  # [blocks, rows]: surviving entries out of 500
    assert torch.allclose(counts, counts.round(), atol=1e-3)  # whole entries, each scaled by exactly 1/(1-p)
    share = 1 - float(counts.sum()) / (500 * counts.numel())
    assert abs(share - p) < 4 * (p * (1 - p) / (500 * counts.numel())) ** 0.5 + 1e-3
    layer.eval()
    with torch.no_grad():
        pair.A.fill_(1.0)
    assert torch.equal(layer(x)[:, 0], torch.full((rows,), 20000.0 * pair.scaling))  # no dropout in eval mode


def _pairs_sharing_prompts(seed: int = 5) -> list[Pair]:
    """Pairs with prompts of different lengths and answers of different lengths (one pair shares nothing)."""
    g = torch.Generator().manual_seed(seed)

    def toks(n: int) -> tuple[int, ...]:
        return tuple(int(i) for i in torch.randint(3, 250, (n,), generator=g))

    out = []
    for prompt, a, b in [(6, 4, 7), (3, 5, 2), (9, 3, 3)]:
        p = toks(prompt)
        c, r = p + toks(a), p + toks(b)
        out.append(Pair(Example(c, tuple(i >= prompt for i in range(len(c)))),
                        Example(r, tuple(i >= prompt for i in range(len(r))))))  # fmt: skip
    return out


def test_a_shared_prompt_run_once_gives_the_whole_rows_logps_and_gradients(tiny_model_dir):
    from chatcli_finetune.pairs.shared_prompt import pair_sequence_logps, shared_length

    model, _, params = _trainable(tiny_model_dir)
    pairs = _pairs_sharing_prompts()
    assert [shared_length(p) for p in pairs] == [5, 2, 8]  # up to the token before the first prediction
    ids, attn, target = collate([p.chosen for p in pairs] + [p.rejected for p in pairs], EOS_ID)
    want = _full_head_sums(model, ids, attn, target)
    want_grads = _grads(params, -(want * torch.arange(1.0, 7.0)).sum())  # every row weighted differently
    calls = []
    hook = model.register_forward_hook(lambda m, args, out: calls.append(tuple(args[0].shape)))
    try:
        got = pair_sequence_logps(model, pairs, EOS_ID, torch.device("cpu"))
    finally:
        hook.remove()
    assert calls == [(6, 8)]  # the rows' remainders only: the longest answer + its first prompt tokens
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    got_grads = _grads(params, -(got * torch.arange(1.0, 7.0)).sum())
    _same_grads(params, got_grads, want_grads)
    same = _pairs_sharing_prompts(seed=6)[:1] * 2  # equal prompt lengths: the causal kernel, no mask
    ids, attn, target = collate([p.chosen for p in same] + [p.rejected for p in same], EOS_ID)
    with torch.no_grad():
        torch.testing.assert_close(pair_sequence_logps(model, same, EOS_ID, torch.device("cpu")),
                                   _full_head_sums(model, ids, attn, target), rtol=1e-5, atol=1e-5)  # fmt: skip


def test_pairs_that_share_nothing_run_whole(tiny_model_dir):
    from chatcli_finetune.pairs.shared_prompt import pair_sequence_logps, shared_length

    model, _, _ = _trainable(tiny_model_dir)
    ex = _examples([(6, 1), (6, 1)], seed=9)  # trained from the second token: nothing can be shared
    pair = Pair(ex[0], ex[1])
    assert shared_length(pair) == 0
    ids, attn, target = collate([ex[0], ex[1]], EOS_ID)
    with torch.no_grad():
        torch.testing.assert_close(pair_sequence_logps(model, [pair], EOS_ID, torch.device("cpu")),
                                   _full_head_sums(model, ids, attn, target), rtol=1e-5, atol=1e-5)  # fmt: skip
