"""What a training run changed, measured after it: ``OUT/what_changed.json`` and a few lines to read.

The adapter just trained is compared with the base model (the same model, the adapter
switched off) on held-out prompts: the validation split, or the training prompts when
the split holds fewer than :data:`MIN_HELD_OUT` (the report says which). For each prompt
(at most :data:`MAX_PROMPTS`) the base model answers greedily, up to
:data:`ANSWER_TOKENS` tokens, its end-of-turn token included; that answer is
teacher-forced with the adapter off and on by :func:`chatcli.lora.compare.compare_answer`
(the maths of the chat's ``/compare``), which gives, in bits:

* **first-token KL**(adapter ‖ base): how far the distribution of the answer's first token moved;
* **per-token KL**: the mean over the answer's tokens;
* **greedy answer changed**: the adapter's most probable token differs from the base's
  at some step of the base answer, which is exactly when the adapter's own greedy answer
  differs from the base's (within its first :data:`ANSWER_TOKENS` tokens);
* **perplexity of the base answers** under the base and under the adapter: an adapter
  that makes the model's own fluent answers far less likely (more than
  :data:`DRIFT_RATIO` times the perplexity) has drifted too far (the collapse check).

A preference run adds, on up to :data:`MAX_PROMPTS` held-out pairs (same fallback), for
DPO the implicit reward margin β·[(log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))]
and the preference accuracy (ties count half). Before training both are fixed by construction: the adapter
starts at zero, so π = π_ref, every margin is 0 and every pair a tie (accuracy 0.5). A
reward model reports its held-out pair accuracy and mean reward margin instead; its
adapter scores answers, it does not write them, so the answer measures are skipped.

When nothing measurable changed (mean first-token KL below :data:`KL_VISIBLE_BITS`
and no greedy answer changed; for a reward model, held-out accuracy not above chance)
the report says so and what to try.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from chatcli.engine.events import Done, Step
from chatcli.engine.generate import Generator
from chatcli.engine.params import SamplingParams
from chatcli.errors import GenerationError
from chatcli.lora.compare import compare_answer
from chatcli_finetune.data import Example, Pair, collate

REPORT_NAME = "what_changed.json"
MIN_HELD_OUT = 4  # fewer validation prompts than this: the training prompts are used
MAX_PROMPTS = 8  # prompts (and pairs) measured: bounds the report's time, one greedy answer each
ANSWER_TOKENS = 24  # greedy base answer length measured per prompt
EXAMPLES = 2  # changed answers shown with the adapter's own greedy text
KL_VISIBLE_BITS = 0.01  # below this mean first-token KL (and no answer changed): nothing measurable
DRIFT_RATIO = 4.0  # base-answer perplexity under the adapter / under the base beyond this: drifted
TRY = "try more steps (--max-steps or --epochs), a higher learning rate (--lr), or more data"


@dataclass(frozen=True)
class Measured:
    """One prompt's comparison."""

    first_kl_bits: float
    mean_kl_bits: float
    changed: bool
    base_logp: float  # Σ ln p(base answer) under the base model
    adapter_logp: float  # ... under the adapter
    tokens: int


def prompt_ids(item: Example | Pair) -> tuple[int, ...]:
    """The ids before the first trained token: the rendered prompt the answer follows."""
    ex = item.chosen if isinstance(item, Pair) else item
    k = ex.mask.index(True) if True in ex.mask else len(ex.ids)
    return ex.ids[: max(1, k)]


def held_out(train: Sequence, val: Sequence) -> tuple[list, str]:
    """The items to measure on, and which split they are ("validation" or "training")."""
    if len(val) >= MIN_HELD_OUT:
        return list(val), "validation"
    return list(val) + list(train), "training"


def _prompts(items: Sequence) -> list[tuple[int, ...]]:
    seen = dict.fromkeys(prompt_ids(x) for x in items)  # DPO pairs share prompts: each once
    return list(seen)[:MAX_PROMPTS]


def _greedy(gen: Generator, prompt: Sequence[int], eos: Sequence[int]) -> tuple[list[int], str]:
    """The greedy answer's ids (the end-of-turn id appended when it stopped) and its text."""
    ids: list[int] = []
    done: Done | None = None
    for ev in gen.stream(prompt, SamplingParams(temperature=0.0, max_tokens=ANSWER_TOKENS, seed=0)):
        if isinstance(ev, Step):
            ids.append(ev.id)
        elif isinstance(ev, Done):
            done = ev
    if done is None or done.finish_reason == "error":
        raise GenerationError((done.error if done else None) or "greedy generation failed")
    if done.finish_reason == "stop" and eos:
        ids.append(int(eos[0]))
    return ids, done.text


def _measure_one(model, manager, name: str, prompt: Sequence[int], answer: Sequence[int]) -> Measured:
    c = compare_answer(model, manager, prompt, answer, names=[name], top_n=1)
    tiny = 1e-30  # a probability of exactly 0 would make the perplexity infinite
    return Measured(
        first_kl_bits=c.steps[0].kl_bits, mean_kl_bits=c.mean_kl_bits, changed=any(s.choice_changed for s in c.steps),
        base_logp=sum(math.log(max(s.p_base or 0.0, tiny)) for s in c.steps),  # local: never None
        adapter_logp=sum(math.log(max(s.p_adapter or 0.0, tiny)) for s in c.steps), tokens=len(c.steps),
    )  # fmt: skip


def answer_changes(model, tokenizer, manager, name: str, items: Sequence) -> dict:
    """The answer measures (see the module doc) of adapter ``name`` on the items' prompts."""
    gen = Generator(model, tokenizer, weights_version=manager.weights_version)
    eos = tuple(tokenizer.eos_ids)
    rows: list[Measured] = []
    examples: list[dict] = []
    for prompt in _prompts(items):
        with manager.override(off=[name]):
            answer, base_text = _greedy(gen, prompt, eos)
        if not answer:
            continue
        m = _measure_one(model, manager, name, prompt, answer)
        rows.append(m)
        if m.changed and len(examples) < EXAMPLES:
            with manager.override(on=[name]):
                _, adapter_text = _greedy(gen, prompt, eos)
            question = _question(tokenizer, prompt)
            examples.append({"prompt": question, "base": base_text, "adapter": adapter_text})
    if not rows:
        return {"prompts": 0}
    n_tok = sum(r.tokens for r in rows)
    ppl_base = math.exp(-sum(r.base_logp for r in rows) / n_tok)
    ppl_adapter = math.exp(-sum(r.adapter_logp for r in rows) / n_tok)
    return {
        "prompts": len(rows),
        "first_token_kl_bits": sum(r.first_kl_bits for r in rows) / len(rows),
        "per_token_kl_bits": sum(r.mean_kl_bits * r.tokens for r in rows) / n_tok,
        "greedy_changed": sum(r.changed for r in rows) / len(rows),
        "base_answer_ppl_base": ppl_base,
        "base_answer_ppl_adapter": ppl_adapter,
        "examples": examples,
    }


def _question(tokenizer, prompt: Sequence[int]) -> str:
    """The prompt's last user turn as text, short (for the examples shown)."""
    text = tokenizer.decode(list(prompt), skip_special_tokens=True).rstrip()
    tail = text.rsplit("\nuser\n", 1)[-1].rsplit("\nassistant", 1)[0].strip()
    return tail[-200:]


@torch.no_grad()
def dpo_margins(model, manager, name: str, pairs: Sequence[Pair], beta: float, pad_id: int, batch: int = 4) -> dict:
    """Implicit reward margins of ``pairs`` (policy = adapter on, reference = adapter off)."""
    from chatcli_finetune.losses import sequence_logps

    margins: list[float] = []
    device = next(model.parameters()).device
    for k in range(0, len(pairs), batch):
        part = pairs[k : k + batch]
        seqs = [p.chosen for p in part] + [p.rejected for p in part]
        ids, attn, target = (t.to(device) for t in collate(seqs, pad_id))
        with manager.override(on=[name]):
            pol = sequence_logps(model, ids, attn, target)
        with manager.override(off=[name]):
            ref = sequence_logps(model, ids, attn, target)
        P = len(part)
        margins += (beta * ((pol[:P] - ref[:P]) - (pol[P:] - ref[P:]))).tolist()
    return _pair_stats(margins)


@torch.no_grad()
def reward_margins(model, manager, name: str, head, pairs: Sequence[Pair], pad_id: int, batch: int = 4) -> dict:
    """Reward differences r(chosen) − r(rejected) of ``pairs`` with the reward adapter on."""
    from chatcli_finetune.losses import rewards

    margins: list[float] = []
    device = next(model.parameters()).device
    for k in range(0, len(pairs), batch):
        part = pairs[k : k + batch]
        ids, attn, _ = (t.to(device) for t in collate([p.chosen for p in part] + [p.rejected for p in part], pad_id))
        with manager.override(on=[name]):
            r = rewards(model, head, ids, attn)
        margins += (r[: len(part)] - r[len(part) :]).tolist()
    return _pair_stats(margins)


def _pair_stats(margins: list[float]) -> dict:
    n = max(1, len(margins))
    return {
        "pairs": len(margins), "margin": sum(margins) / n,
        "accuracy": sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins) / n,
    }  # fmt: skip


def measure(model, tokenizer, manager, name: str, kind: str, train: Sequence, val: Sequence, *,
            beta: float = 0.1, head=None, pad_id: int = 0) -> dict:  # fmt: skip
    """The whole report (the dict written to ``what_changed.json``), its verdict included."""
    items, split = held_out(train, val)
    was_training = model.training
    model.eval()  # no dropout while measuring
    try:
        report: dict = {"kind": kind, "split": split}
        if kind == "reward":
            report["pairs"] = reward_margins(model, manager, name, head, items[:MAX_PROMPTS], pad_id)
        else:
            report["answers"] = answer_changes(model, tokenizer, manager, name, items)
            if kind == "dpo":
                after = dpo_margins(model, manager, name, items[:MAX_PROMPTS], beta, pad_id)
                report["pairs"] = {"before": {"pairs": after["pairs"], "margin": 0.0, "accuracy": 0.5}, "after": after}
    finally:
        model.train(was_training)
    report["verdict"], report["advice"] = verdict(report)
    return report


def verdict(report: dict) -> tuple[str, str | None]:
    """("changed" | "nothing" | "drifted", what to try or None)."""
    if report["kind"] == "reward":
        if report["pairs"]["accuracy"] <= 0.5:
            return "nothing", f"the reward model ranks held-out pairs no better than chance: {TRY}"
        return "changed", None
    a = report["answers"]
    if not a.get("prompts"):
        return "nothing", "no prompt gave a base answer to measure"
    if a["first_token_kl_bits"] < KL_VISIBLE_BITS and a["greedy_changed"] == 0:
        return "nothing", f"nothing measurable changed: {TRY}"
    if a["base_answer_ppl_adapter"] > DRIFT_RATIO * a["base_answer_ppl_base"]:
        return "drifted", ("the adapter finds the base model's own answers far less likely: it may have drifted "
                           "too far (watch for broken answers); try a lower --lr or fewer steps")  # fmt: skip
    return "changed", None


def lines(report: dict) -> list[str]:
    """The report as a few lines for a terminal or the chat."""

    def where(n: int, what: str) -> str:
        held = report["split"] == "validation"
        plural = "" if n == 1 else "s"
        return f"{n} {'held-out' if held else 'training'} {what}{plural}" + ("" if held else " (too few held out)")

    out: list[str] = []
    if report["kind"] == "reward":
        p = report["pairs"]
        out.append(f"what changed, on {where(p['pairs'], 'pair')}: pair accuracy "
                   f"{p['accuracy']:.2f} (chance 0.50), mean reward margin {p['margin']:+.3f}")  # fmt: skip
    else:
        a = report["answers"]
        if a.get("prompts"):
            out.append(
                f"what changed, on {where(a['prompts'], 'prompt')}: first-token KL {a['first_token_kl_bits']:.3f} bits, "
                f"per-token KL {a['per_token_kl_bits']:.3f} bits, greedy answers changed {a['greedy_changed']:.0%}; "
                f"base answers' perplexity {a['base_answer_ppl_base']:.2f} -> {a['base_answer_ppl_adapter']:.2f} "
                "with the adapter"
            )  # fmt: skip
        if "pairs" in report:
            b, f = report["pairs"]["before"], report["pairs"]["after"]
            out.append(f"DPO implicit reward margin {b['margin']:+.3f} -> {f['margin']:+.3f}, preference accuracy "
                       f"{b['accuracy']:.2f} -> {f['accuracy']:.2f} (on {f['pairs']} pairs)")  # fmt: skip
        for ex in a.get("examples", [])[:1]:
            out.append(f"e.g. {ex['prompt']!r}: base {_short(ex['base'])!r} -> adapter {_short(ex['adapter'])!r}")
    if report["advice"]:
        out.append(report["advice"])
    return out


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
