"""Candidate answers: N answers to one conversation from batched generation.

:func:`generate_candidates` asks ``engine.chat_batch`` for the answers, one batch
per *variant* (a temperature and an adapter setting): all candidates share one
variant unless the person asks for several temperatures (``--temperature
0.5,0.8,1.2``) or ``--lora-mix``, which spreads the candidates round-robin over
the base model, each loaded adapter alone, and (with two or more) the current
mix. Every candidate has its own seed (``base + i``), so one ranking can be
regenerated exactly. Sampling uses the ranking temperature even when the chat
itself is greedy: N greedy answers would be N copies of one.

A :class:`Candidate` records what a trainer or a reader needs to trust it: the
text, seed, sampling parameters, adapters and scales, finish reason, token
count and its mean token probability (the model's own, temperature 1, and the
one of the distribution it was sampled from), and, when a reward model scored
it (``/rank`` with one loaded), its reward. Its steps are kept in memory so
the chosen answer shows its probabilities in the chat. ``existing`` marks the
conversation's own reply offered among the candidates (``/rank`` does by default),
and :attr:`Candidate.truncated` an answer that did not end by itself (cut at
``max_tokens``, or stopped): shown as such, and never exported as a target.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from chatcli.engine.events import Done, Step
from chatcli.engine.params import SamplingParams
from chatcli.errors import ChatcliError, UsageError

MIN_N, MAX_N, DEFAULT_N = 2, 10, 4
DEFAULT_TEMPERATURE = 0.8
UNFINISHED = ("length", "cancelled")  # finish reasons of an answer that did not end by itself

# (tokens generated per candidate, finished flags); called at most every ~50 ms and once at the end.
CandidateProgressFn = Callable[[list[int], list[bool]], None]


@dataclass
class Candidate:
    index: int
    text: str
    seed: int
    params: dict  # SamplingParams.to_json() of the batch it came from
    adapters: list[dict] = field(default_factory=list)  # [{"name": ..., "scale": ...}] active while sampling
    finish_reason: str = "stop"
    tokens: int = 0
    mean_prob: float | None = None  # in the distribution sampled from
    mean_model_prob: float | None = None  # under the raw model (temperature 1)
    reward: float | None = None  # the loaded reward model's score, when one scored the set
    existing: bool = False  # the conversation's own reply, offered beside the sampled answers
    steps: list[Step] = field(default_factory=list, repr=False, compare=False)

    @property
    def truncated(self) -> bool:
        """Cut at max_tokens (or stopped): not a whole answer, so never a training target."""
        return self.finish_reason in UNFINISHED

    def to_json(self) -> dict:
        return {
            "text": self.text, "seed": self.seed, "params": self.params, "adapters": self.adapters,
            "finish_reason": self.finish_reason, "tokens": self.tokens, "mean_prob": self.mean_prob,
            "mean_model_prob": self.mean_model_prob,
        } | ({"reward": self.reward} if self.reward is not None else {}) | (  # unscored: the layout stays as it was
            {"existing": True} if self.existing else {})  # fmt: skip

    @classmethod
    def from_json(cls, index: int, d: dict) -> "Candidate":
        """From :meth:`to_json` output (or a hand-written ``{"text": ...}``); raises ValueError."""
        if not isinstance(d, dict):
            raise ValueError(f"candidate {index + 1} is not an object")
        text = d.get("text")
        if not isinstance(text, str):
            raise ValueError(f"candidate {index + 1} has no \"text\" string")
        seed = d.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"candidate {index + 1}: \"seed\" must be an integer")
        params, adapters = d.get("params") or {}, d.get("adapters") or []
        if not isinstance(params, dict) or not isinstance(adapters, list):
            raise ValueError(f"candidate {index + 1}: \"params\" must be an object and \"adapters\" a list")
        return cls(
            index=index, text=text, seed=seed, params=params, adapters=adapters,
            finish_reason=str(d.get("finish_reason", "stop")), tokens=_int(d.get("tokens"), 0),
            mean_prob=_float(d.get("mean_prob")), mean_model_prob=_float(d.get("mean_model_prob")),
            reward=_float(d.get("reward")), existing=d.get("existing") is True,
        )


@dataclass(frozen=True)
class Variant:
    """One batched generation: the candidates it makes, at which temperature, with which adapters on."""

    members: tuple[int, ...]
    temperature: float
    adapters_on: tuple[str, ...] | None = None  # None: leave the adapters as they are
    label: str = ""


def check_n(n: int) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or not MIN_N <= n <= MAX_N:
        raise UsageError(f"cannot rank {n!r} answers: N must be between {MIN_N} and {MAX_N}")
    return n


def adapter_manager(engine: Any):
    """The engine's own AdapterManager (``LoadedModel.adapters``), or None: no engine, or one
    whose weights are elsewhere (a server's adapter control cannot switch adapters per candidate)."""
    from chatcli.engine.protocol import capabilities

    if engine is None or not capabilities(engine).weights_in_process:
        return None
    return getattr(engine, "adapters", None)


def active_adapters(engine: Any) -> list[dict]:
    manager = adapter_manager(engine)
    if manager is None:
        return []
    return [{"name": i.name, "scale": i.scale} for i in manager.list() if i.enabled and i.scale != 0.0]


def plan(n: int, temperatures: Sequence[float], lora_mix: bool, engine: Any = None) -> list[Variant]:
    """Spread ``n`` candidates round-robin over temperatures x adapter settings (one is allowed:
    ``/rank`` samples N - 1 beside the conversation's own reply)."""
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_N:
        raise UsageError(f"cannot sample {n!r} answers: between 1 and {MAX_N}")
    settings: list[tuple[tuple[str, ...] | None, str]] = [(None, "")]
    if lora_mix:
        manager = adapter_manager(engine)
        names = list(manager.names) if manager is not None else []
        if not names:
            raise UsageError("--lora-mix needs at least one loaded LoRA adapter; load one first or rank without it")
        settings = [((), "base")] + [((name,), name) for name in names]
        if len(names) > 1:
            settings.append((tuple(manager.active_names()) or tuple(names), "current mix"))
    combos = [(t, s) for s in settings for t in temperatures]
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(i % len(combos), []).append(i)
    out = []
    for k, idx in sorted(members.items()):
        t, (on, label) = combos[k]
        out.append(Variant(tuple(idx), t, on, label))
    return out


def generate_candidates(
    engine: Any,
    messages: Sequence[dict],
    params: SamplingParams,
    n: int = DEFAULT_N,
    *,
    temperatures: Sequence[float] = (DEFAULT_TEMPERATURE,),
    lora_mix: bool = False,
    base_seed: int | None = None,
    progress: CandidateProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> list[Candidate]:
    """N candidate answers to ``messages`` (the conversation up to the last user turn).

    Raises :class:`ChatcliError` when the engine fails or every answer errors;
    returns what arrived (finish reason "cancelled") when ``cancel`` is set.
    """
    variants = plan(n, temperatures, lora_mix, engine)
    if base_seed is None:
        base_seed = params.seed if params.seed is not None else random.SystemRandom().randrange(2**31)
    seeds = [base_seed + i for i in range(n)]
    tokens, finished = [0] * n, [False] * n
    steps: list[list[Step]] = [[] for _ in range(n)]
    dones: list[Done | None] = [None] * n
    used: list[tuple[SamplingParams, list[dict]]] = [(params, [])] * n
    last = [0.0]

    def tick(force: bool = False) -> None:
        now = time.monotonic()
        if progress is not None and (force or now - last[0] >= 0.05):
            last[0] = now
            progress(list(tokens), list(finished))

    manager = adapter_manager(engine)
    for v in variants:
        vparams = params.with_(temperature=v.temperature, seed=None)
        switch = nullcontext()
        if v.adapters_on is not None and manager is not None:
            switch = manager.override(on=v.adapters_on, off=[a for a in manager.names if a not in v.adapters_on])
        with switch:  # the override bumps the model's weights version: no stale KV cache is reused
            adapters = active_adapters(engine)
            for i in v.members:
                used[i] = (vparams, adapters)
            stream = engine.chat_batch(list(messages), vparams, len(v.members), seeds=[seeds[i] for i in v.members], cancel=cancel)
            for event in stream:
                if isinstance(event, Step):
                    i = v.members[event.seq]
                    steps[i].append(event)
                    tokens[i] += 1
                    tick()
                elif isinstance(event, Done):
                    i = v.members[event.seq]
                    dones[i] = event
                    finished[i] = True
                    tick(force=True)
        if cancel is not None and cancel.is_set():
            break
    tick(force=True)
    out = []
    for i in range(n):
        d = dones[i]
        vparams, adapters = used[i]
        text = d.text if d is not None and d.text else "".join(s.text for s in steps[i])
        out.append(Candidate(
            index=i, text=text, seed=seeds[i], params=vparams.with_(seed=seeds[i]).to_json(), adapters=adapters,
            finish_reason=d.finish_reason if d is not None else "cancelled", tokens=len(steps[i]),
            mean_prob=_mean(s.prob for s in steps[i]), mean_model_prob=_mean(s.model_prob for s in steps[i]),
            steps=steps[i],
        ))
    if not (cancel is not None and cancel.is_set()) and all(c.finish_reason == "error" for c in out):
        err = next((d.error for d in dones if d is not None and d.error), None)
        raise ChatcliError(f"generating the candidates failed: {err or 'every answer ended in an error'}")
    return out


def _mean(values) -> float | None:
    vals = list(values)
    return sum(vals) / len(vals) if vals else None


def _int(v, default: int) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else default


def _float(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
