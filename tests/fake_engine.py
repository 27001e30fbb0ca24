"""A deterministic fake :class:`~chatcli.engine.protocol.ChatEngine` for front-end tests and demos.

Every step draws from a full (small) vocabulary distribution built from a seeded
hash of the conversation and the tokens so far, so answers are reproducible,
some steps are near-certain and some wide open, and ``prob``/``model_prob``/
``entropy``/``top`` are mutually consistent (temperature, top-k and top-p really
reshape the sampled distribution). It honours ``cancel``, ``answer_prefix_ids``
(continuation after forced tokens), ``max_tokens`` and a per-step ``delay``.

Run ``python tests/fake_engine.py`` to open the TUI on it (``--plain`` for the REPL).
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import threading
import time
from collections.abc import Iterator, Sequence

from chatcli.engine.protocol import ModelIdentity
from chatcli.engine.events import Done, Event, Notice, Step, TopToken
from chatcli.engine.params import SamplingParams

EOS = 0
VOCAB = [
    "<|im_end|>", " The", " model", " predicts", " the", " next", " token", ".", "\n\n", " It", " is",
    " a", " small", " test", ",", " and", " **sure**", " probability", " of", " each", " step", "\n- ",
    " Paris", " Rome", " capital", " France", " `code`", " very", " likely", " maybe", " but", " here",
    "!", " we", " go", " answer", " text", " again", " done", " ok", "\n",
]


class FakeEngine:
    """Yields Steps with made-up but consistent distributions."""

    def __init__(
        self,
        *,
        length: int = 24,
        delay: float = 0.0,
        context_length: int = 2048,
        name: str = "fake-tiny",
        fail_after: int | None = None,
        drop_notice_after_turns: int | None = None,
        report_speed: float | None = None,
    ) -> None:
        self.length = length  # tokens before the fake emits EOS
        self.delay = delay  # seconds per step
        self.fail_after = fail_after
        self.drop_notice_after_turns = drop_notice_after_turns
        self.report_speed = report_speed  # a fixed tokens/s in Done (for snapshots)
        self.identity = ModelIdentity(
            name=name, path="/fake/" + name, model_type="fake", sha256=None, dtype="float32", device="cpu",
            context_length=context_length, parameters=1_234_567,
        )
        self.hold_at: int | None = None  # stop after this many new steps until `release` is set
        self.release = threading.Event()
        self.calls: list[dict] = []
        self.started = threading.Event()  # set when a stream produced its first step

    # --- the ChatEngine surface ------------------------------------------------------------

    def render_prompt(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        out = []
        if not messages or messages[0]["role"] != "system":
            out.append("<|im_start|>system\nYou are a fake test model.<|im_end|>\n")
        for m in messages:
            out.append(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n")
        if add_generation_prompt:
            out.append("<|im_start|>assistant\n")
        return "".join(out)

    def count_tokens(self, text: str) -> int:
        return len(re.findall(r"<\|[^|]*\|>|\w+|[^\w\s]", text))

    def chat(
        self,
        messages: Sequence[dict],
        params: SamplingParams,
        cancel: threading.Event | None = None,
        answer_prefix_ids: Sequence[int] = (),
    ) -> Iterator[Event]:
        self.calls.append({"messages": [dict(m) for m in messages], "params": params, "prefix": list(answer_prefix_ids)})
        key = "\x1f".join(f"{m['role']}:{m['content']}" for m in messages)
        prompt_tokens = self.count_tokens(self.render_prompt(messages))
        if self.drop_notice_after_turns is not None:
            turns = sum(1 for m in messages if m["role"] == "user")
            if turns > self.drop_notice_after_turns:
                n = turns - self.drop_notice_after_turns
                yield Notice(f"dropped {n} older turn{'s' * (n > 1)} to fit the context", kind="context", data={"dropped": n})
        return (yield from self._stream(key, params, cancel, list(answer_prefix_ids), prompt_tokens))

    def complete(self, text: str, params: SamplingParams, cancel: threading.Event | None = None) -> Iterator[Event]:
        return (yield from self._stream("complete:" + text, params, cancel, [], self.count_tokens(text)))

    def chat_batch(self, messages, params, n, seeds=None, cancel=None) -> Iterator[Event]:
        raise NotImplementedError("the fake engine does not batch")

    # --- internals -------------------------------------------------------------------------

    def _stream(self, key: str, params: SamplingParams, cancel, prefix: list[int], prompt_tokens: int) -> Iterator[Event]:
        t0 = time.perf_counter()
        ids = list(prefix)
        texts: list[str] = []
        seed = params.seed if params.seed is not None else 0
        sample_rng = random.Random(f"{seed}|{key}|{prefix}")
        first: float | None = None
        n_new = 0
        while True:
            if cancel is not None and cancel.is_set():
                return (yield self._done("cancelled", prompt_tokens, n_new, t0, first, texts))
            if n_new >= params.max_tokens:
                return (yield self._done("length", prompt_tokens, n_new, t0, first, texts))
            if self.hold_at is not None and n_new == self.hold_at and not self.release.is_set():
                while not self.release.is_set() and not (cancel is not None and cancel.is_set()):
                    time.sleep(0.005)
                continue
            if self.fail_after is not None and n_new >= self.fail_after:
                return (yield Done("error", prompt_tokens, n_new, None, None, error="fake failure: the model produced NaN logits"))
            raw = self._raw_distribution(key, ids)
            sampled = _reshape(raw, params)
            if params.greedy:
                choice = max(range(len(raw)), key=lambda i: (sampled[i], -i))
            else:
                choice = sample_rng.choices(range(len(sampled)), weights=sampled)[0]
            if choice == EOS:
                return (yield self._done("stop", prompt_tokens, n_new, t0, first, texts))
            if self.delay:
                time.sleep(self.delay)
            order = sorted(range(len(raw)), key=lambda i: -raw[i])[: params.top_n]
            top = tuple(TopToken(i, VOCAB[i], sampled[i], raw[i]) for i in order)
            entropy = -sum(p * math.log2(p) for p in raw if p > 0)
            step = Step(
                index=len(ids), id=choice, token=VOCAB[choice], text=VOCAB[choice], prob=sampled[choice],
                model_prob=raw[choice], entropy=entropy, top=top,
            )
            ids.append(choice)
            texts.append(step.text)
            n_new += 1
            if first is None:
                first = time.perf_counter()
                self.started.set()
            yield step

    def _raw_distribution(self, key: str, ids: list[int]) -> list[float]:
        # EOS becomes certain once the answer reaches `length` tokens.
        h = hashlib.blake2b(f"{key}|{ids[-3:]}|{len(ids)}".encode(), digest_size=8).digest()
        rng = random.Random(h)
        sharp = rng.choice([0.5, 1.5, 3.0, 6.0])  # some steps wide open, some near-certain
        logits = [rng.gauss(0, 1) * sharp for _ in VOCAB]
        logits[EOS] = 50.0 if len(ids) >= self.length else -50.0
        m = max(logits)
        exps = [math.exp(x - m) for x in logits]
        z = sum(exps)
        return [e / z for e in exps]

    def _done(self, reason, prompt_tokens, n, t0, first, texts) -> Done:
        now = time.perf_counter()
        tps = (n - 1) / (now - first) if first is not None and n > 1 and now > first else None
        if self.report_speed is not None:
            tps = self.report_speed
        return Done(reason, prompt_tokens, n, (first - t0) if first else None, tps, text="".join(texts))


def _reshape(raw: list[float], params: SamplingParams) -> list[float]:
    """The distribution actually sampled from: temperature, then top-k and top-p filters."""
    if params.greedy:
        best = max(range(len(raw)), key=lambda i: raw[i])
        return [1.0 if i == best else 0.0 for i in range(len(raw))]
    logp = [math.log(p) / params.temperature if p > 0 else -math.inf for p in raw]
    m = max(logp)
    w = [math.exp(x - m) for x in logp]
    order = sorted(range(len(w)), key=lambda i: -w[i])
    keep = set(order[: params.top_k] if params.top_k else order)
    if params.top_p < 1.0:
        z = sum(w)
        acc, kept = 0.0, set()
        for i in order:
            kept.add(i)
            acc += w[i] / z
            if acc >= params.top_p:
                break
        keep &= kept
    w = [x if i in keep else 0.0 for i, x in enumerate(w)]
    z = sum(w)
    return [x / z for x in w]


def fake_factory(engine: FakeEngine | None = None, *, load_delay: float = 0.0, fail: str | None = None):
    """An engine factory for ``make_app``: reports a few progress stages, then returns the fake."""

    def factory(progress):
        for i in range(3):
            progress("loading weights", i + 1, 3)
            if load_delay:
                time.sleep(load_delay / 3)
        if fail:
            from chatcli.errors import ModelError

            raise ModelError(fail)
        return engine if engine is not None else FakeEngine()

    return factory


if __name__ == "__main__":  # a demo: the TUI (or --plain REPL) on the fake engine
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from chatcli.chat.store import open_store

    eng = FakeEngine(length=int(os.environ.get("FAKE_LENGTH", "120")), delay=float(os.environ.get("FAKE_DELAY", "0.03")))
    store, warning = open_store()
    if "--plain" in sys.argv:
        from chatcli.chat.repl import run_repl

        sys.exit(run_repl(fake_factory(eng), store=store, store_warning=warning))
    from chatcli.tui.app import make_app

    make_app(fake_factory(eng, load_delay=1.0), store=store, store_warning=warning).run()
