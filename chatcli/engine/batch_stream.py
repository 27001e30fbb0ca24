"""N answers to one prompt, decoded together: :meth:`BatchStreams.stream_batch`, a part of
:class:`~chatcli.engine.generate.Generator` (its prefill, prefix cache, decode step and events)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Sequence

import torch

from chatcli.engine.answer_builder import AnswerBuilder
from chatcli.engine.answer_clock import AnswerClock
from chatcli.engine.events import Done, Notice, Step
from chatcli.engine.loop_watch import watch_loops
from chatcli.engine.params import SamplingParams
from chatcli.engine.sampling import make_generator
from chatcli.engine.step_stats import sample_rows
from chatcli.errors import GenerationError


class BatchStreams:
    """The batched half of :class:`~chatcli.engine.generate.Generator` (which it is mixed into)."""

    def stream_batch(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        n: int,
        seeds: Sequence[int] | None = None,
        cancel: threading.Event | None = None,
        eos_ids: Sequence[int] | None = None,
        context_length: int | None = None,
    ) -> Iterator[Step | Done | Notice]:
        """N answers to one prompt, decoded together. Events carry ``seq`` (0..n-1); each
        row ends with its own Done. Row i samples with ``seeds[i]`` (default: seed + i).

        The prompt is prefilled once in the prefix cache (reusing what it holds, and leaving
        it holding the prompt, which the next turn starts with), then copied to N rows.
        """
        if not isinstance(n, int) or n < 1:
            raise GenerationError(f"cannot generate {n!r} answers: ask for at least 1")
        if seeds is not None and len(seeds) != n:
            raise GenerationError(f"got {len(seeds)} seeds for {n} answers: give one seed per answer")
        prompt = [int(i) for i in prompt_ids]
        ctx = self._context(context_length)
        self._check_prompt(prompt, ctx)
        self._acquire()
        try:
            yield from watch_loops(self._stream_batch(prompt, params, n, seeds, cancel, eos_ids, ctx), params)
        finally:
            self._release()

    def _stream_batch(self, prompt, params, n, seeds, cancel, eos_ids, ctx) -> Iterator[Step | Done]:
        start = time.perf_counter()
        if seeds is None:
            base = params.seed if params.seed is not None else random.SystemRandom().randrange(2**31)
            seeds = [base + i for i in range(n)]
        self.last_seeds = list(seeds)
        gens = [make_generator(s, self.device) for s in seeds]
        eos = self.tokenizer.eos_ids if eos_ids is None else eos_ids
        pad = next(iter(eos), 0)  # fed to finished rows; their outputs are ignored
        answers = [AnswerBuilder(self.tokenizer, params.stop, eos, seq=i) for i in range(n)]
        clocks = [AnswerClock(start) for _ in range(n)]
        active = list(range(n))

        def done(i: int, reason: str, error: str | None = None) -> Done:
            a = answers[i]
            return Done(reason, len(prompt), a.count, clocks[i].ttft(), clocks[i].rate(a.count), a.text, error,
                        prefilled, seq=i)  # fmt: skip

        self._prefix_cache().ensure(min(len(prompt) + 1, ctx))
        first, prefilled = self._prefill(prompt, cancel)
        if first is None:
            for i in active:
                yield done(i, "cancelled")
            return
        batch = self.cache.expand(n)  # a copy: the prefix cache keeps holding the prompt
        batch.ensure(min(len(prompt) + params.max_tokens, ctx))
        logits = first.expand(n, -1)  # [n, V]
        history = torch.tensor([prompt] * n, dtype=torch.long) if params.repetition_penalty != 1.0 else None
        step = self._step(batch, min(len(prompt) + params.max_tokens, ctx))
        yield from self._compile_notices()
        sampled = 0
        while active:
            if cancel is not None and cancel.is_set():
                for i in active:
                    yield from self._emit(answers[i].finish(), clocks[i])
                    yield done(i, "cancelled")
                return
            got = sample_rows(logits, params, history, gens, active, self.tokenizer.token_text)
            sampled += 1
            next_ids = [pad] * n
            for i in list(active):
                g = got[i]
                if isinstance(g, str):
                    yield from self._emit(answers[i].finish(), clocks[i])
                    yield done(i, "error", g)
                    active.remove(i)
                    continue
                next_ids[i] = g.id
                steps, ended = answers[i].add(g.id, g.prob, g.model_prob, g.entropy, g.top)
                yield from self._emit(steps, clocks[i])
                if ended:
                    yield done(i, "stop")
                    active.remove(i)
                elif sampled >= params.max_tokens or len(prompt) + sampled >= ctx:
                    yield from self._emit(answers[i].finish(), clocks[i])
                    yield done(i, "length")
                    active.remove(i)
            if not active:
                return
            if history is not None:
                history = torch.cat([history, torch.tensor(next_ids).view(n, 1)], dim=1)
            logits = self._decode(next_ids, batch, step)  # [n, V]
