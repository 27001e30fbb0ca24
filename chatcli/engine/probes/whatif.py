"""What-if on a step: one frozen step's distribution re-formed under other sampling settings.

A step of an answer was predicted from a prefix (prompt + answer before it). Its logits
do not depend on the sampling settings, so they are computed once
(:func:`step_logits`: the prefix re-scored, no KV cache, the generation path untouched)
and re-formed for any settings instantly by :func:`what_if`, which goes through
:mod:`chatcli.engine.sampling` (the very functions generation samples with, in
transformers' order: repetition penalty, temperature, top-k, top-p, min-p), so what it
shows is exactly what sampling would have drawn from.

Each shown row says which filter removed its token, if one did: the first filter in
that order that sent it to zero ("top-k", "top-p", "min-p"), or "greedy" at
temperature 0 for every token but the argmax. Rows are the ``top_n`` tokens of the
raw model distribution (softmax at T=1 over the untouched logits, as ``Step.top``),
plus any ids asked for with ``include``; one "outside" figure per distribution gives
the mass of every other token.

The adapter scale is not a sampling setting: it changes the logits.
:func:`logits_at_scales` re-scores the prefix with some adapters at other scales
through the manager's ``override``, which restores every switch, scale and weight
afterwards (and bumps the weights version on the way in and out, so no KV cache filled
under other weights is reused).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from chatcli.engine.params import SamplingParams
from chatcli.engine.sampling import entropy_bits, processed_logits, raw_distribution, sampling_distribution
from chatcli.errors import UsageError

CUTS = ("top-k", "top-p", "min-p")  # the filters, in the order sampling applies them


@torch.inference_mode()
def step_logits(model, ids: Sequence[int]) -> torch.Tensor:
    """The logits for the token after ``ids`` (the frozen prefix, re-scored in one forward). [V] float32"""
    if not ids:
        raise UsageError("no prefix to score: the step has no tokens before it")
    limit = getattr(getattr(model, "config", None), "context_length", None)
    if limit is not None and len(ids) > limit:
        raise UsageError(f"the prefix has {len(ids)} tokens, more than the model's context of {limit}")
    x = torch.tensor([list(ids)], dtype=torch.long, device=model.device)  # [1, S]
    return model(x, last_only=True)[0, -1].float()  # [V]


def logits_at_scales(model, manager, ids: Sequence[int], scales: Mapping[str, float], *,
                     off: Iterable[str] = ()) -> torch.Tensor:  # fmt: skip
    """:func:`step_logits` with the adapters in ``scales`` on at those scales and those in ``off``
    off (the others as they are); the manager is restored exactly afterwards. Refused while an
    answer streams (the manager's guard raises)."""
    with manager.guarded():
        with manager.override(on=list(scales), off=list(off), scales=dict(scales)):
            return step_logits(model, ids)


@dataclass(frozen=True)
class WhatIfRow:
    """One shown token: its raw logit, its probability in the model and in the sampling distribution."""

    id: int
    token: str
    logit: float  # the model's raw logit (before the repetition penalty and temperature)
    model_prob: float  # softmax of the raw logits, T=1
    prob: float  # in the distribution sampling would draw from under WhatIf.params
    cut: str | None  # the filter that removed it: "top-k" | "top-p" | "min-p" | "greedy"; None: kept

    def to_json(self) -> dict:
        return {"id": self.id, "token": self.token, "logit": self.logit, "model_prob": self.model_prob,
                "prob": self.prob, "cut": self.cut}  # fmt: skip


@dataclass(frozen=True)
class WhatIf:
    """One step's distribution re-formed under ``params``."""

    params: SamplingParams
    rows: tuple[WhatIfRow, ...]  # most probable under the model first
    shown_model_mass: float  # model probability of the shown rows together
    outside_model_mass: float  # ... of every other token (1 - shown)
    outside_prob_mass: float  # sampling probability of every token not shown
    kept: int  # tokens left with a non-zero sampling probability
    entropy_model: float  # bits
    entropy_sampled: float  # bits

    def row(self, token_id: int) -> WhatIfRow | None:
        return next((r for r in self.rows if r.id == token_id), None)

    def to_json(self) -> dict:
        return {
            "type": "whatif", "params": self.params.to_json(), "rows": [r.to_json() for r in self.rows],
            "shown_model_mass": self.shown_model_mass, "outside_model_mass": self.outside_model_mass,
            "outside_prob_mass": self.outside_prob_mass, "kept": self.kept,
            "entropy_model": self.entropy_model, "entropy_sampled": self.entropy_sampled,
        }  # fmt: skip


def what_if(
    logits: torch.Tensor,
    params: SamplingParams,
    prev_ids: Sequence[int] | torch.Tensor | None,
    tokenizer=None,
    *,
    top_n: int = 10,
    include: Sequence[int] = (),
) -> WhatIf:
    """Re-form the distribution of ``logits`` [V] under ``params``.

    ``prev_ids``: the ids the repetition penalty counts (the step's prefix: prompt and answer
    before it, as generation passes them). ``tokenizer``: for the rows' text (``token_text``);
    without one a row's token is its id. ``include``: ids shown even outside the top ``top_n``
    (the step's chosen token).
    """
    logits = logits.float().reshape(-1)  # [V]
    prev = prev_ids if prev_ids is None or len(prev_ids) else None
    sampled = sampling_distribution(logits, params, prev)  # [V], what sample() would draw from
    raw = raw_distribution(logits)  # [V]
    cut = _cut_by(logits, params, prev)  # [V] index into CUTS (+ greedy), -1 = kept

    n = min(max(0, top_n), logits.shape[-1])
    ids = torch.topk(logits, n).indices.tolist() if n else []
    ids += [int(i) for i in dict.fromkeys(include) if int(i) not in ids and 0 <= int(i) < logits.shape[-1]]
    ids.sort(key=lambda i: -float(logits[i]))
    labels = (*CUTS, "greedy")
    text = tokenizer.token_text if tokenizer is not None else str
    rows = tuple(
        WhatIfRow(i, text(i), float(logits[i]), float(raw[i]), float(sampled[i]), labels[c] if c >= 0 else None)
        for i, c in zip(ids, cut[ids].tolist() if ids else [])
    )  # fmt: skip
    shown_model = float(raw[ids].sum()) if ids else 0.0
    shown_prob = float(sampled[ids].sum()) if ids else 0.0
    return WhatIf(
        params=params, rows=rows, shown_model_mass=shown_model,
        outside_model_mass=max(0.0, 1.0 - shown_model), outside_prob_mass=max(0.0, 1.0 - shown_prob),
        kept=int((sampled > 0).sum()), entropy_model=max(0.0, float(entropy_bits(raw))),
        entropy_sampled=max(0.0, float(entropy_bits(sampled))),  # a one-hot's sum rounds to -0.0
    )  # fmt: skip


def _cut_by(logits: torch.Tensor, params: SamplingParams, prev) -> torch.Tensor:
    """For every id, which filter removed it: 0 top-k, 1 top-p, 2 min-p, 3 greedy, -1 none. [V] long

    The filters run one after another on what the previous left, so sampling's own
    :func:`processed_logits` with the later filters switched off says what each one left.
    """
    out = torch.full(logits.shape, -1, dtype=torch.long, device=logits.device)
    if params.greedy:
        x = processed_logits(logits, params, prev)  # the penalised logits; their argmax is drawn
        out.fill_(3)
        out[int(x.argmax())] = -1
        return out
    stages = (
        (params.top_k > 0, params.with_(top_p=1.0, min_p=0.0)),  # through top-k
        (params.top_p < 1.0, params.with_(min_p=0.0)),  # through top-p
        (params.min_p > 0.0, params),  # through min-p
    )
    for k, (on, stage) in reversed(list(enumerate(stages))):
        if on:  # a filter that is off removes nothing: its stage is the one before
            removed = torch.isneginf(processed_logits(logits, stage, prev))
            out[removed] = k  # written last for the earliest stage that removed it
    return out
