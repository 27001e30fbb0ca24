"""``/compare`` on a remote server: base vs adapter from two greedy requests, over the returned alternatives.

A server cannot re-score a given answer teacher-forced, so both sides answer
again: one request as the base model, one with the adapter (vLLM: another model
name; llama.cpp: a per-request ``lora`` list), both greedy and as long as the
answer being compared. Step by step, while the two answers agree token for token
(and at the first step where they part), the two distributions are compared over
the union of the alternatives each returned; the mass a side did not return is
spread evenly over the union's tokens it left out. KL values are therefore partial
(a lower-resolution estimate of the full KL), and the comparison stops where the
answers diverge, which the summary says.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from chatcli.lora.compare import Comparison, PairedToken, TokenShift
from chatcli.engine.events import Done, Step, text_token_id
from chatcli.engine.params import SamplingParams
from chatcli.errors import GenerationError, UsageError
from chatcli.remote.backend import MAX_TOP_LOGPROBS


def _answer(engine, fields: dict, messages: list[dict], params: SamplingParams) -> list[Step]:
    steps: list[Step] = []
    for event in engine.chat_with(fields, messages, params):
        if isinstance(event, Step):
            steps.append(event)
        elif isinstance(event, Done) and event.finish_reason == "error":
            raise GenerationError(f"/compare: {event.error}")
    return steps


def _dist(step: Step, union: list[str]) -> dict[str, float]:
    """The step's returned alternatives over ``union``, the unreturned mass spread over the rest."""
    given = {t.token: t.model_prob if t.model_prob == t.model_prob else t.prob for t in step.top}
    given = {k: v for k, v in given.items() if v == v}
    missing = [t for t in union if t not in given]
    rest = max(0.0, 1.0 - sum(given.values()))
    floor = max(rest / len(missing), 1e-9) if missing else 0.0
    return {t: given.get(t, floor) for t in union}


def _shift(index: int, base: Step, adapter: Step, top_n: int) -> TokenShift:
    union = list(dict.fromkeys([t.token for t in adapter.top] + [t.token for t in base.top]))
    if not union:
        raise UsageError("/compare needs token probabilities, and this server sends no logprobs")
    pb, pa = _dist(base, union), _dist(adapter, union)
    kl = sum(pa[t] * (math.log2(pa[t]) - math.log2(pb[t])) for t in union if pa[t] > 0)
    chosen = base.token
    top = sorted(union, key=lambda t: -max(pa[t], pb[t]))[: 2 * top_n]
    return TokenShift(
        index=index, id=text_token_id(chosen), token=chosen, kl_bits=max(0.0, kl),
        p_base=pb.get(chosen, 0.0), p_adapter=pa.get(chosen, 0.0),
        base_top1=text_token_id(max(union, key=lambda t: pb[t])), adapter_top1=text_token_id(max(union, key=lambda t: pa[t])),
        top=tuple(PairedToken(text_token_id(t), t, pb[t], pa[t]) for t in top),
    )


def compare_remote(engine, control, messages: list[dict], node, names: Sequence[str] | None, top_n: int = 5) -> Comparison:
    """Base vs adapter over the length of ``node``'s answer (see the module doc)."""
    if not node.steps:
        raise UsageError("nothing to compare: the answer has no tokens yet")
    params = SamplingParams(temperature=0.0, seed=0, max_tokens=len(node.steps), top_n=min(max(top_n, 5), MAX_TOP_LOGPROBS))
    with_adapter = control.selection(list(names) if names else None, on=True)
    without = control.selection(list(names) if names else None, on=False)
    adapter_steps = _answer(engine, with_adapter, messages, params)
    base_steps = _answer(engine, without, messages, params)
    shifts = []
    for i, (b, a) in enumerate(zip(base_steps, adapter_steps)):
        shifts.append(_shift(i, b, a, top_n))
        if a.token != b.token:
            break  # beyond here the two answers have different prefixes
    label = names[0] if names else with_adapter.get("model", "adapters on")
    return Comparison(adapters=(f"{label} (partial: 2 greedy requests, top {params.top_n} alternatives, "
                                f"{len(shifts)} of {len(node.steps)} steps)",), steps=tuple(shifts))
