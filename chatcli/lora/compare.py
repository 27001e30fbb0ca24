"""What an adapter changes: both distributions at every step of an answer, teacher-forced.

``compare_answer(model, manager, prompt_ids, answer_ids)`` scores the same tokens
twice with one forward each (no sampling, no cache): once with the adapters as
they are ("adapter"), once with them off ("base"). With ``names``, only those
adapters are switched (on for the adapter pass, off for the base pass); the
others stay as they are in both. For every answer token t with prefix x:

    KL(adapter || base) = Σ_v p_a(v|x) · (log p_a(v|x) − log p_b(v|x))     [bits]
    shift              = p_a(t|x) − p_b(t|x)

plus the top tokens of either distribution with both probabilities, so a front
end can show the two distributions side by side. The manager's ``override``
restores every switch and weight afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from chatcli.lora.manager import AdapterManager
from chatcli.errors import GenerationError, UsageError

LN2 = math.log(2.0)


@dataclass(frozen=True)
class PairedToken:
    """One token with its probability under both distributions."""

    id: int
    token: str
    p_base: float
    p_adapter: float

    def to_json(self) -> dict:
        return {"id": self.id, "token": self.token, "p_base": self.p_base, "p_adapter": self.p_adapter}


@dataclass(frozen=True)
class TokenShift:
    """One answer step under base and adapter."""

    index: int
    id: int
    token: str
    kl_bits: float  # KL(adapter || base)
    p_base: float  # the chosen token's probability without the adapter(s)
    p_adapter: float  # ... and with them
    base_top1: int  # the base model's most probable token here
    adapter_top1: int
    top: tuple[PairedToken, ...]  # union of both top-n lists, most probable first

    @property
    def shift(self) -> float:
        return self.p_adapter - self.p_base

    @property
    def choice_changed(self) -> bool:
        """The two distributions disagree on the most probable token."""
        return self.base_top1 != self.adapter_top1

    def to_json(self) -> dict:
        return {
            "type": "token", "index": self.index, "id": self.id, "token": self.token,
            "kl_bits": self.kl_bits, "p_base": self.p_base, "p_adapter": self.p_adapter,
            "shift": self.shift, "choice_changed": self.choice_changed,
            "top": [t.to_json() for t in self.top],
        }  # fmt: skip


@dataclass(frozen=True)
class Comparison:
    adapters: tuple[str, ...]  # what was switched
    steps: tuple[TokenShift, ...]

    @property
    def mean_kl_bits(self) -> float:
        return sum(s.kl_bits for s in self.steps) / len(self.steps) if self.steps else 0.0

    @property
    def max_step(self) -> TokenShift | None:
        return max(self.steps, key=lambda s: s.kl_bits) if self.steps else None

    def to_json(self) -> dict:
        top = self.max_step
        return {
            "type": "summary", "adapters": list(self.adapters), "tokens": len(self.steps),
            "mean_kl_bits": self.mean_kl_bits, "max_kl_bits": top.kl_bits if top else 0.0,
            "max_kl_index": top.index if top else None,
            "choices_changed": sum(s.choice_changed for s in self.steps),
            "mean_shift": sum(s.shift for s in self.steps) / len(self.steps) if self.steps else 0.0,
        }  # fmt: skip


@torch.no_grad()
def _log_probs(model, ids: torch.Tensor, start: int) -> torch.Tensor:
    """log p(· | prefix) at positions start .. T-2 (those predicting ids[start+1:]): [n, V] float32."""
    h = model.hidden_states(ids)  # [1, T, D]
    logits = model.lm_head(h[:, start:-1])  # [1, n, V]
    return torch.log_softmax(logits.float(), dim=-1)[0]


def compare_answer(
    model,
    manager: AdapterManager,
    prompt_ids: Sequence[int],
    answer_ids: Sequence[int],
    *,
    names: Iterable[str] | None = None,
    top_n: int = 5,
    tokenizer=None,
) -> Comparison:
    """Score ``answer_ids`` after ``prompt_ids`` with and without the adapters (see module doc)."""
    if not prompt_ids:
        raise UsageError("nothing to compare: the prompt is empty")
    if not answer_ids:
        raise UsageError("nothing to compare: the answer has no tokens yet")
    names = list(manager.names if names is None else names)
    if not names:
        raise UsageError("no adapter is loaded: load one with /load-lora first")
    total = len(prompt_ids) + len(answer_ids)
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if limit is not None and total > limit:
        raise GenerationError(f"prompt + answer is {total} tokens, more than the model's context of {limit}")
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids) + list(answer_ids)], dtype=torch.long, device=device)
    start = len(prompt_ids) - 1
    with manager.guarded():
        with manager.override(on=names):
            lp_a = _log_probs(model, ids, start)  # [n, V]
        with manager.override(off=names):
            lp_b = _log_probs(model, ids, start)
    if not (torch.isfinite(lp_a).all() and torch.isfinite(lp_b).all()):
        raise GenerationError("the model produced NaN/Inf logits; the comparison is meaningless")

    p_a, p_b = lp_a.exp(), lp_b.exp()
    kl = (p_a * (lp_a - lp_b)).sum(-1).clamp(min=0.0) / LN2  # [n] bits; clamp float noise below 0
    chosen = torch.tensor(list(answer_ids), device=device)
    pa_t = p_a.gather(1, chosen[:, None])[:, 0]
    pb_t = p_b.gather(1, chosen[:, None])[:, 0]
    k = max(1, min(top_n, p_a.shape[-1]))
    top_a, top_b = p_a.topk(k, dim=-1).indices, p_b.topk(k, dim=-1).indices  # [n, k]

    def text(i: int) -> str:
        return tokenizer.token_text(i) if tokenizer is not None else str(i)

    steps = []
    for i, tok in enumerate(answer_ids):
        union = dict.fromkeys([*top_a[i].tolist(), *top_b[i].tolist()])
        paired = sorted(
            (PairedToken(v, text(v), float(p_b[i, v]), float(p_a[i, v])) for v in union),
            key=lambda t: -max(t.p_base, t.p_adapter),
        )
        steps.append(
            TokenShift(
                index=i, id=int(tok), token=text(int(tok)), kl_bits=float(kl[i]),
                p_base=float(pb_t[i]), p_adapter=float(pa_t[i]),
                base_top1=int(top_b[i, 0]), adapter_top1=int(top_a[i, 0]), top=tuple(paired),
            )  # fmt: skip
        )
    return Comparison(adapters=tuple(names), steps=tuple(steps))
