"""Held-out evaluation of a policy: greedy answers, their mean reward, and the exact KL to the reference.

:func:`held_out` answers each prompt greedily (temperature 0: the policy's own best
answer, no sampling luck), grades the answers, and measures how far the policy has
moved from the reference *on those answers*: at every answer position the full
next-token distributions of both are compared,

    KL_t = Σ_v p(v) · log2(p(v) / q(v))      p = the policy, q = the reference

and averaged over all answer tokens (bits per token). Unlike the k3 estimate the
training logs, this sums over the whole vocabulary, so it is exact for the positions
it visits. ``reference`` is a context-manager factory that switches the adapter off
(the adapter manager's ``disabled``). ``finetune rl`` validates with it, and
``benchmarks/rl_max_words.py`` measures before and after with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from chatcli.engine.events import Done, Step
from chatcli.engine.params import SamplingParams
from chatcli_finetune.data import Example, collate


@dataclass
class HeldOut:
    mean_reward: float
    kl_bits: float  # mean per answer token
    mean_words: float
    answers: list[str] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    stopped: float = 0.0  # share of answers that ended by themselves


def greedy_answer(engine, messages: Sequence[dict], max_new_tokens: int) -> tuple[str, list[int], str]:
    """(text, token ids with the end-of-turn token when it stopped, finish reason)."""
    engine.generator.reset()  # weights may have changed in place (training) since the cache was filled
    ids: list[int] = []
    done = None
    for ev in engine.chat(list(messages), SamplingParams(temperature=0.0, max_tokens=max_new_tokens, top_n=0)):
        if isinstance(ev, Step):
            ids.append(ev.id)
        elif isinstance(ev, Done):
            done = ev
    reason = done.finish_reason if done is not None else "cancelled"
    eos = engine.tokenizer.eos_ids
    if reason == "stop" and eos:
        ids.append(eos[0])
    return (done.text if done is not None else ""), ids, reason


@torch.no_grad()
def kl_bits(model, reference: Callable, rows: list[Example], pad_id: int, batch: int = 4) -> float:
    """Mean per-token KL(model ‖ reference) over the masked tokens of ``rows``, in bits."""
    total, count = 0.0, 0
    for k in range(0, len(rows), batch):
        ids, attn, target = collate(rows[k : k + batch], pad_id)
        ids, attn = ids.to(model.device), attn.to(model.device)
        mask = (target[:, 1:] & attn[:, 1:].bool().cpu()).to(model.device)  # [B, S-1]
        if not mask.any():
            continue
        logp = torch.log_softmax(model(ids, attention_mask=attn)[:, :-1].float(), -1)[mask]  # [N, V]
        with reference():
            logq = torch.log_softmax(model(ids, attention_mask=attn)[:, :-1].float(), -1)[mask]  # [N, V]
        total += float((logp.exp() * (logp - logq)).sum())
        count += int(mask.sum())
    return total / max(1, count) / math.log(2)


def held_out(engine, grader, prompts: Sequence[Sequence[dict]], max_new_tokens: int, reference: Callable) -> HeldOut:
    """Greedy answers to ``prompts`` (each a message list ending with the user's), graded, with the KL."""
    model = engine.model
    was_training = model.training
    model.eval()
    try:
        rows: list[Example] = []
        texts: list[str] = []
        rewards: list[float] = []
        stopped = 0
        for messages in prompts:
            text, ids, reason = greedy_answer(engine, messages, max_new_tokens)
            prompt = engine.tokenizer.encode_chat(list(messages))
            rows.append(Example(ids=tuple(prompt + ids), mask=(False,) * len(prompt) + (True,) * len(ids)))
            texts.append(text)
            rewards += grader.score(list(messages), [text])
            stopped += reason == "stop"
        pad = engine.tokenizer.eos_ids[0] if engine.tokenizer.eos_ids else 0
        kl = kl_bits(model, reference, rows, pad)
    finally:
        model.train(was_training)
    n = max(1, len(texts))
    return HeldOut(sum(rewards) / n, kl, sum(len(t.split()) for t in texts) / n, texts, rewards, stopped / n)
