"""Helpers for the rank plugin tests: a batching fake engine, a registry with the plugin's commands, fixtures."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

from chatcli.chat.builtin_commands import build_registry
from chatcli.chat.commands import Registry
from chatcli.engine.events import Done, Event, Step
from chatcli.engine.params import SamplingParams
from chatcli_rank.candidates import Candidate
from chatcli_rank.ranking import Ranking
from chatcli_rank.store import RankStore
from tests.fake_engine import FakeEngine


class BatchFakeEngine(FakeEngine):
    """The fake engine plus ``chat_batch``: each row is the single answer with its seed, rows interleaved."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.batch_calls: list[dict] = []

    def chat_batch(self, messages, params: SamplingParams, n: int, seeds=None, cancel: threading.Event | None = None) -> Iterator[Event]:
        seeds = list(seeds) if seeds is not None else [(params.seed or 0) + i for i in range(n)]
        assert len(seeds) == n
        self.batch_calls.append({"messages": [dict(m) for m in messages], "params": params, "n": n, "seeds": seeds})
        streams = [self._one(messages, params.with_(seed=s), cancel) for s in seeds]
        active = list(range(n))
        while active:  # one token of every live row per round, as a real batch yields them
            for i in list(active):
                event = next(streams[i], None)
                if event is None:
                    active.remove(i)
                elif isinstance(event, (Step, Done)):
                    yield replace(event, seq=i)

    def _one(self, messages, params, cancel):
        key = "\x1f".join(f"{m['role']}:{m['content']}" for m in messages)
        return self._stream(key, params, cancel, [], self.count_tokens(self.render_prompt(messages)))


def chat_registry() -> Registry:
    """A chat front end's registry with the rank plugin's commands, as ``chatcli chat`` builds it."""
    from chatcli.plugins.manager import PluginManager

    problems: list[str] = []
    reg = build_registry(PluginManager(selection={"rank"}, report=problems.append))
    assert not problems, problems
    return reg


def candidates(texts: list[str], *, model_probs: list[float] | None = None) -> list[Candidate]:
    probs = model_probs or [0.5] * len(texts)
    return [
        Candidate(i, t, seed=100 + i, params=SamplingParams(temperature=0.8, seed=100 + i).to_json(),
                  tokens=len(t.split()), mean_prob=p, mean_model_prob=p)  # fmt: skip
        for i, (t, p) in enumerate(zip(texts, probs))
    ]


def conversation(question: str = "Which answer is best?", system: str | None = None, history: list[tuple[str, str]] = ()) -> list[dict]:
    msgs = [{"role": "system", "content": system}] if system else []
    for u, a in history:
        msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    return msgs + [{"role": "user", "content": question}]


def store_ranking(store: RankStore, texts: list[str], tiers, status: str = "ranked", *, messages=None, model="m1", note="") -> int:
    set_id = store.add_set(messages or conversation(), candidates(texts), model={"name": model})
    store.add_ranking(set_id, Ranking(tuple(tuple(t) for t in tiers), status, note))
    return set_id
