"""Teacher-forced scoring: how predictable was each token of a given text?

For every token after the first, the model sees the tokens before it and we read
the probability it gave the token that actually came, its surprisal in bits
(-log2 p), its rank in the full distribution, and the entropy of that
distribution. Perplexity is 2 ** (mean surprisal). The same forward pass backs
``chatcli score`` and the adapter comparison (which runs it twice, base and adapter).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from chatcli.model.kv_cache import KVCache
from chatcli.errors import GenerationError

CHUNK = 256  # tokens per forward: bounds the [S, V] logits kept in memory at once


@dataclass(frozen=True)
class TokenScore:
    index: int
    id: int
    token: str
    prob: float | None  # None for tokens with no context (the first one)
    surprisal_bits: float | None
    rank: int | None  # 1 = the model's most probable token
    entropy: float | None  # bits, of the distribution the token was drawn against
    top: tuple[tuple[int, str, float], ...] = ()  # (id, token, prob) of the most probable tokens

    def to_json(self) -> dict:
        return {
            "index": self.index, "id": self.id, "token": self.token, "prob": self.prob,
            "surprisal_bits": self.surprisal_bits, "rank": self.rank, "entropy": self.entropy,
            "top": [{"id": i, "token": t, "prob": p} for i, t, p in self.top],
        }


@dataclass(frozen=True)
class ScoreResult:
    tokens: tuple[TokenScore, ...]
    context_tokens: int  # tokens before the scored text (a BOS or a chat prompt), not scored

    @property
    def scored(self) -> list[TokenScore]:
        return [t for t in self.tokens if t.surprisal_bits is not None]

    @property
    def total_bits(self) -> float:
        return sum(t.surprisal_bits for t in self.scored)

    @property
    def perplexity(self) -> float | None:
        scored = self.scored
        return 2 ** (self.total_bits / len(scored)) if scored else None

    def to_json(self) -> dict:
        return {
            "type": "score",
            "tokens": [t.to_json() for t in self.tokens],
            "scored_tokens": len(self.scored),
            "total_bits": self.total_bits,
            "perplexity": self.perplexity,
        }


@torch.inference_mode()
def next_token_logprobs(model, ids: Sequence[int]) -> Iterator[torch.Tensor]:
    """Yield log-probabilities [n, V] (float32) predicting ids[1:], chunk by chunk."""
    config = model.config
    if len(ids) > config.context_length:
        raise GenerationError(
            f"the text is {len(ids)} tokens; the model's context is {config.context_length}: score a shorter text"
        )
    cache = KVCache(config, 1, model.dtype, model.device)
    cache.ensure(len(ids))
    x = torch.as_tensor(list(ids), dtype=torch.long, device=model.device)
    for start in range(0, len(ids) - 1, CHUNK):
        chunk = x[start : min(start + CHUNK, len(ids) - 1)].view(1, -1)
        logits = model(chunk, cache)[0].float()  # [n, V]
        if not torch.isfinite(logits).all():
            raise GenerationError("the model produced NaN/Inf logits: the weights or the dtype are broken")
        yield torch.log_softmax(logits, dim=-1)


def score_ids(model, tokenizer, ids: Sequence[int], context_tokens: int = 0, top_n: int = 5) -> ScoreResult:
    """Score ``ids[context_tokens:]`` given everything before it."""
    ids = list(ids)
    scores: list[TokenScore] = []
    pos = 1
    for logp in next_token_logprobs(model, ids):
        targets = torch.as_tensor(ids[pos : pos + logp.shape[0]], device=logp.device)
        chosen = logp.gather(1, targets.view(-1, 1)).squeeze(1)  # [n]
        ranks = (logp > chosen.unsqueeze(1)).sum(1) + 1  # [n]
        probs = logp.exp()
        entropy = -(probs * logp).nan_to_num().sum(1) / math.log(2)  # [n], bits
        top_p, top_i = probs.topk(min(top_n, probs.shape[1]), dim=1) if top_n else (None, None)
        for j in range(logp.shape[0]):
            i = pos + j
            if i >= context_tokens:
                lp = float(chosen[j])
                top = () if top_i is None else tuple(
                    (int(t), tokenizer.token_text(int(t)), float(p)) for t, p in zip(top_i[j], top_p[j])
                )
                scores.append(TokenScore(
                    index=i - context_tokens, id=ids[i], token=tokenizer.token_text(ids[i]),
                    prob=math.exp(lp), surprisal_bits=-lp / math.log(2), rank=int(ranks[j]),
                    entropy=float(entropy[j]), top=top,
                ))
        pos += logp.shape[0]
    if context_tokens == 0 and ids:  # the first token had nothing to be predicted from
        scores.insert(0, TokenScore(0, ids[0], tokenizer.token_text(ids[0]), None, None, None, None))
    return ScoreResult(tokens=tuple(scores), context_tokens=context_tokens)
