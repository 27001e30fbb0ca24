"""What an adapter changes: both distributions at every step of an answer, teacher-forced.

``compare_answer(model, manager, prompt_ids, answer_ids)`` scores the same tokens
twice with one forward each (no sampling, no cache): once with the adapters on
("adapter"), once with them off ("base"). ``names`` chooses the adapters compared
(default: every loaded generation adapter), ``scales`` the scales they run at in the
adapter pass (default: their current ones; ``/compare`` passes the scales an answer
was generated with), and ``off`` adapters kept off in both passes (``/compare`` of an
answer: every adapter that did not make it). The others stay as they are in both.
A reward model (an adapter with a score head) is never part of a generation
comparison: it is off in both passes, and naming it is refused. For every answer
token t with prefix x:

    KL(adapter || base) = Σ_v p_a(v|x) · (log p_a(v|x) − log p_b(v|x))     [bits]
    shift              = p_a(t|x) − p_b(t|x)

plus the top tokens of either distribution with both probabilities, so a front
end can show the two distributions side by side. The manager's ``override``
restores every switch, scale and weight afterwards. A mean KL below 0.001 bits puts
the line saying the adapter changes nothing measurable, and the likely reason, in
``Comparison.no_effect`` (:mod:`chatcli.lora.no_effect`); :func:`answer_effect` is that
check for one adapter as it is now (after ``/load-lora`` and ``/lora-scale``).

The same :class:`Comparison` carries a remote server's comparison
(:mod:`chatcli.remote.compare`), where only the top alternatives of each side are
known: a probability a side did not return is ``None`` (shown as "< floor", the
smallest probability that side returned at that step, never a made-up number), and
``partial`` is set.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import torch

from chatcli.lora.manager import AdapterManager
from chatcli.lora.no_effect import NO_EFFECT_BITS, no_effect_line, no_effect_reason
from chatcli.errors import GenerationError, UsageError

LN2 = math.log(2.0)


@dataclass(frozen=True)
class PairedToken:
    """One token with its probability under both distributions (None: that side did not return it)."""

    id: int
    token: str
    p_base: float | None
    p_adapter: float | None

    def to_json(self) -> dict:
        return {"id": self.id, "token": self.token, "p_base": self.p_base, "p_adapter": self.p_adapter}


@dataclass(frozen=True)
class TokenShift:
    """One answer step under base and adapter."""

    index: int
    id: int
    token: str
    kl_bits: float  # KL(adapter || base); partial comparisons: a lower bound (see chatcli.remote.compare)
    p_base: float | None  # the chosen token's probability without the adapter(s) (None: not returned)
    p_adapter: float | None  # ... and with them
    base_top1: int  # the base model's most probable token here
    adapter_top1: int
    top: tuple[PairedToken, ...]  # union of both top-n lists, most probable first
    # Partial comparisons: the smallest probability each side returned; a None above is below it.
    base_floor: float | None = None
    adapter_floor: float | None = None

    @property
    def shift(self) -> float | None:
        return None if self.p_adapter is None or self.p_base is None else self.p_adapter - self.p_base

    @property
    def choice_changed(self) -> bool:
        """The two distributions disagree on the most probable token."""
        return self.base_top1 != self.adapter_top1

    def to_json(self) -> dict:
        out = {
            "type": "token", "index": self.index, "id": self.id, "token": self.token,
            "kl_bits": self.kl_bits, "p_base": self.p_base, "p_adapter": self.p_adapter,
            "shift": self.shift, "choice_changed": self.choice_changed,
            "top": [t.to_json() for t in self.top],
        }  # fmt: skip
        if self.base_floor is not None or self.adapter_floor is not None:
            out.update(base_floor=self.base_floor, adapter_floor=self.adapter_floor)
        return out


@dataclass(frozen=True)
class Comparison:
    adapters: tuple[str, ...]  # what was switched ("sft", or "sft×0.5" when compared at another scale)
    steps: tuple[TokenShift, ...]
    # "teacher-forced": the steps are the answer's own tokens; "greedy": two fresh answers
    # (a server that cannot score a given text), compared while they agree.
    method: str = "teacher-forced"
    partial: bool = False  # only the alternatives a server returned are known
    note: str = ""  # how it was made, for the summary line (a remote server's comparison)
    no_effect: str = ""  # mean KL below NO_EFFECT_BITS: the line saying so and why (chatcli.lora.no_effect)

    @property
    def mean_kl_bits(self) -> float:
        return sum(s.kl_bits for s in self.steps) / len(self.steps) if self.steps else 0.0

    @property
    def max_step(self) -> TokenShift | None:
        return max(self.steps, key=lambda s: s.kl_bits) if self.steps else None

    def to_json(self) -> dict:
        top = self.max_step
        shifts = [s.shift for s in self.steps if s.shift is not None]
        out = {
            "type": "summary", "adapters": list(self.adapters), "tokens": len(self.steps),
            "mean_kl_bits": self.mean_kl_bits, "max_kl_bits": top.kl_bits if top else 0.0,
            "max_kl_index": top.index if top else None,
            "choices_changed": sum(s.choice_changed for s in self.steps),
            "mean_shift": sum(shifts) / len(shifts) if shifts else None if self.steps else 0.0,
        }  # fmt: skip
        if self.partial:  # a server's comparison (the local one's schema stays as it was)
            out.update(partial=True, method=self.method, note=self.note)
        return out


def is_reward_model(manager, name: str) -> bool:
    """An adapter with a score head scores answers; it never generates them."""
    adapter = getattr(manager, "adapter", None)  # a server's adapter control has no local adapters
    return adapter is not None and bool(adapter(name).heads)


def label(name: str, scale: float | None) -> str:
    """How a compared adapter is named in a summary: with its scale when that is not 1."""
    return name if scale is None or scale == 1.0 else f"{name}×{scale:g}"


def prepare(model, manager: AdapterManager, prompt_ids: Sequence[int], answer_ids: Sequence[int],
            names: Iterable[str] | None, off: Iterable[str], command: str = "/compare") -> tuple[list[str], list[str], torch.Tensor, int]:
    """What a teacher-forced pass over an answer needs, checked: the adapters switched (``names``;
    default every generation adapter), those kept off throughout (``off`` and every reward
    model), the ids [1, T] on the model's device, and the position predicting the first answer token."""
    if not prompt_ids:
        raise UsageError("nothing to compare: the prompt is empty")
    if not answer_ids:
        raise UsageError("nothing to compare: the answer has no tokens yet")
    rewards = [n for n in manager.names if is_reward_model(manager, n)]
    if names is None:
        names = [n for n in manager.names if n not in rewards]
        if not names and rewards:
            raise UsageError(f"only a reward model is loaded ({', '.join(rewards)}): it scores answers and is not "
                             "compared; /load-lora a generation adapter")
    names = list(names)
    if not names:
        raise UsageError("no adapter is loaded: load one with /load-lora first")
    for n in names:
        manager.info(n)  # a clear error for an unknown name
        if n in rewards:
            raise UsageError(f"{n} is a reward model: it scores answers and generates none, so {command} leaves it out")
    off = [n for n in dict.fromkeys([*off, *rewards]) if n not in names]
    total = len(prompt_ids) + len(answer_ids)
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if limit is not None and total > limit:
        raise GenerationError(f"prompt + answer is {total} tokens, more than the model's context of {limit}")
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids) + list(answer_ids)], dtype=torch.long, device=device)
    return names, off, ids, len(prompt_ids) - 1


@torch.no_grad()
def answer_log_probs(model, ids: torch.Tensor, start: int) -> torch.Tensor:
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
    scales: Mapping[str, float] | None = None,
    off: Iterable[str] = (),
    top_n: int = 5,
    tokenizer=None,
) -> Comparison:
    """Score ``answer_ids`` after ``prompt_ids`` with and without the adapters (see module doc)."""
    names, off, ids, start = prepare(model, manager, prompt_ids, answer_ids, names, off)
    scales = dict(scales or {})
    device = ids.device
    with manager.guarded():
        with manager.override(on=names, off=off, scales=scales):
            lp_a = answer_log_probs(model, ids, start)  # [n, V]
        with manager.override(off=[*names, *off]):
            lp_b = answer_log_probs(model, ids, start)
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
    result = Comparison(adapters=tuple(label(n, scales.get(n)) for n in names), steps=tuple(steps))
    if result.mean_kl_bits < NO_EFFECT_BITS:
        result = replace(result, no_effect=no_effect_line(manager, names, result.mean_kl_bits, scales))
    return result


def answer_effect(model, manager: AdapterManager, prompt_ids: Sequence[int], answer_ids: Sequence[int], name: str,
                  tokenizer=None) -> str | None:
    """After ``/load-lora`` or ``/lora-scale``: the line saying adapter ``name``, as it is now, changes
    nothing on this answer, or None when it changes something. Switched off it changes nothing now
    (said without a forward); otherwise the answer is scored with and without it, the other adapters
    as they are."""
    if not manager.info(name).enabled:
        return f"{name} changes nothing now: {no_effect_reason(manager, name, check_enabled=True)}"
    return compare_answer(model, manager, prompt_ids, answer_ids, names=[name], top_n=1, tokenizer=tokenizer).no_effect or None
