"""``/compare`` on a remote server: base vs adapter over the alternatives the server returns.

Two ways, chosen once per server (:attr:`chatcli.remote.backend.RemoteEngine.text_scorer`):

* **teacher-forced** where the server scores a given text (vLLM's and chatcli serve's ``/tokenize`` and
  ``/v1/completions`` with ``echo``, :mod:`chatcli.remote.scoring`): the answer on
  screen is scored twice, as the base model and with the adapter (vLLM: another model
  name; llama.cpp: a per-request ``lora`` list), every token given the ones before it;
* **greedy** elsewhere (llama.cpp, OpenAI): both sides answer again,
  greedy and as long as the answer; step by step, while the two answers agree token
  for token (and at the first step where they part), their distributions are
  compared, and the comparison stops where they diverge, which the summary says.

Either way a side reports only its top ``k`` alternatives (and the chosen token's own
probability). Nothing is invented for the rest: a token one side did not return has
an unknown probability (``None``) that is below the smallest one that side returned
at that step (its *floor*), and the panel and the printed comparison show it as
"< floor".

KL(adapter‖base) is computed from known values only, as a **lower bound** of the full
KL: the vocabulary is coarse-grained into the tokens both sides returned, each on its
own, plus one bucket for everything else, whose mass on each side is 1 minus what
that side put on the shared tokens. The KL between the two coarse distributions never
exceeds the KL between the full ones (the data-processing inequality), and every
number in it is known. The comparison is marked ``partial`` and says so.

Tokens are matched by id: the server's own (llama.cpp) or one made from the token's
text (vLLM and chatcli serve send none), so there two tokens with one text (byte
tokens that both show as "�") are taken for one; a text a side returned twice is
known to be ambiguous and stays out of the shared tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from chatcli.engine.events import Done, Step
from chatcli.engine.params import SamplingParams
from chatcli.errors import GenerationError, UsageError
from chatcli.lora.compare import Comparison, PairedToken, TokenShift, label
from chatcli.remote.backend import MAX_TOP_LOGPROBS
from chatcli.remote.scoring import Unsupported


def _answer(engine, fields: dict, messages: list[dict], params: SamplingParams) -> list[Step]:
    steps: list[Step] = []
    for event in engine.chat_with(fields, messages, params):
        if isinstance(event, Step):
            steps.append(event)
        elif isinstance(event, Done) and event.finish_reason == "error":
            raise GenerationError(f"/compare: {event.error}")
    return steps


def _p(x) -> float | None:
    """A probability a server reported (raw or processed, whichever the mode filled), or None."""
    p = x.model_prob if x.model_prob == x.model_prob else x.prob
    return p if p == p else None


@dataclass(frozen=True)
class Side:
    """What one side (base or adapter) reported at a step, by token id (a server's own ids, else
    ids made from the token's text: two tokens with one text cannot be told apart)."""

    probs: dict[int, float]
    texts: dict[int, str]
    floor: float | None  # the smallest of its top k: a token it did not return is below it
    ambiguous: frozenset[int]  # ids it returned twice (one text, two tokens): left out of the KL


def known(step: Step, k: int) -> Side:
    """What ``step`` reports. A server may add the scored token itself beyond the ``k`` asked for
    (vLLM's echo does): it is known, but says nothing about the tokens not returned."""
    probs: dict[int, float] = {}
    texts: dict[int, str] = {}
    twice: set[int] = set()
    for t in step.top:
        p = _p(t)
        if p is None:
            continue
        if t.id in probs:
            twice.add(t.id)
        probs.setdefault(t.id, p)  # the top list is sorted: the first is the larger
        texts.setdefault(t.id, t.token)
    extra = step.id if len(step.top) > k and step.id in probs else None
    floor = min((p for i, p in probs.items() if i != extra), default=None)
    own = _p(step)
    if own is not None and step.id not in probs:
        probs[step.id], texts[step.id] = own, step.token
    return Side(probs, texts, floor, frozenset(twice))


def kl_lower_bound(pa: dict, pb: dict, leave_out=frozenset()) -> float:
    """KL(a‖b) in bits over the tokens both sides returned (but ``leave_out``) plus one bucket for
    the rest (module doc)."""
    shared = [t for t in pa if t in pb and t not in leave_out and pa[t] > 0 and pb[t] > 0]
    kl = sum(pa[t] * math.log2(pa[t] / pb[t]) for t in shared)
    rest_a = max(0.0, 1.0 - sum(pa[t] for t in shared))
    rest_b = max(0.0, 1.0 - sum(pb[t] for t in shared))
    if rest_a > 0 and rest_b > 0:  # rest_a = 0 adds 0; rest_b = 0 would add +inf: left out, still a bound
        kl += rest_a * math.log2(rest_a / rest_b)
    return max(0.0, kl)  # float noise only: a KL is >= 0


def _shift(index: int, base: Step, adapter: Step, k: int, top_n: int) -> TokenShift:
    b, a = known(base, k), known(adapter, k)
    if not a.probs or not b.probs:
        raise UsageError("/compare needs token probabilities, and this server sends no logprobs")
    pa, pb = a.probs, b.probs
    union = list(dict.fromkeys([*pa, *pb]))
    top = sorted(union, key=lambda t: -max(p for p in (pa.get(t), pb.get(t)) if p is not None))[: 2 * top_n]
    texts = {**a.texts, **b.texts}
    return TokenShift(
        index=index, id=base.id, token=base.token, kl_bits=kl_lower_bound(pa, pb, a.ambiguous | b.ambiguous),
        p_base=pb.get(base.id), p_adapter=pa.get(base.id),
        base_top1=max(pb, key=pb.__getitem__), adapter_top1=max(pa, key=pa.__getitem__),
        top=tuple(PairedToken(t, texts[t], pb.get(t), pa.get(t)) for t in top),
        base_floor=b.floor, adapter_floor=a.floor,
    )  # fmt: skip


def compare_remote(engine, control, messages: list[dict], node, names: Sequence[str] | None,
                   scales: dict[str, float] | None = None, top_n: int = 5) -> Comparison:
    """Base vs adapter over ``node``'s answer (see the module doc). ``names``: the adapters to
    switch on (None: those on now); ``scales``: exactly these adapters at these scales (the ones
    an answer was made with)."""
    if not node.steps:
        raise UsageError("nothing to compare: the answer has no tokens yet")
    k = min(max(top_n, 5), MAX_TOP_LOGPROBS)
    names = list(scales) if scales is not None else list(names) if names else None
    with_adapter = control.selection(names, on=True, scales=scales)
    without = control.selection(names, on=False, scales=scales)
    labels = tuple(label(n, (scales or {}).get(n)) for n in names) if names else (with_adapter.get("model", "adapters on"),)
    scorer = engine.text_scorer
    why = "the server cannot score a given text"
    if scorer is not None:
        try:
            ids, start = scorer.answer_ids(messages, node.step_text)
            adapter_steps = scorer.score(ids, start, with_adapter, k)
            base_steps = scorer.score(ids, start, without, k)
        except Unsupported as e:
            why = e.message
        else:
            shifts = [_shift(i, b, a, k, top_n) for i, (b, a) in enumerate(zip(base_steps, adapter_steps))]
            return Comparison(labels, tuple(shifts), method="teacher-forced", partial=True, note=(
                f"partial: teacher-forced on the server over its top {k} alternatives; "
                "'<' marks a probability it did not return, KL is a lower bound"))  # fmt: skip
    params = SamplingParams(temperature=0.0, seed=0, max_tokens=len(node.steps), top_n=k)
    adapter_steps = _answer(engine, with_adapter, messages, params)
    base_steps = _answer(engine, without, messages, params)
    shifts = []
    for i, (b, a) in enumerate(zip(base_steps, adapter_steps)):
        shifts.append(_shift(i, b, a, k, top_n))
        if a.token != b.token:
            break  # beyond here the two answers have different prefixes
    return Comparison(labels, tuple(shifts), method="greedy", partial=True, note=(
        f"partial: 2 greedy requests ({why}), not the answer shown; top {k} alternatives, "
        f"{len(shifts)} of {len(node.steps)} steps while they agree; '<' marks a probability not returned, "
        "KL is a lower bound"))  # fmt: skip
