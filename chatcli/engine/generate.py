"""The step loop: prompt ids in, a stream of Step events and one Done out.

:class:`Generator` holds one model, its tokenizer and one :class:`KVCache` with the
ids whose keys and values it holds (``cached_ids``). Layers, as in mlx-lm:

* :meth:`Generator.stream` — one answer: reuse the longest cached prefix of the
  prompt, prefill the rest (in chunks, cancellable), then decode one token at a
  time, yielding :class:`Step` events and a final :class:`Done`;
* :meth:`Generator.stream_batch` — N answers to one prompt: one prefill, the cache
  copied to N rows, all rows decoded together with their own seeds
  (:mod:`chatcli.engine.batch_stream`);
* :meth:`Generator.generate` — the answer as a string.

Per step the raw distribution (softmax at T=1) and the sampling distribution are
both reported, with the top tokens of the raw one (:mod:`chatcli.engine.step_stats`).
Prefill runs the model's forward; each decode step runs the lean
:class:`~chatcli.model.decode_step.DecodeStep` over the cache reserved for prompt + answer
(the same numbers with fewer operations per token), or, when the generator holds a
:class:`~chatcli.model.compiled.step.CompiledDecoder` (``--compile``, or the default once built), its
compiled step (the same numbers again, bit for bit). Text, stop strings and end-of-sequence
ids are handled by
:class:`~chatcli.engine.answer_builder.AnswerBuilder`.

Both streams watch for loops (:mod:`chatcli.engine.loop_watch`): when an answer starts
repeating itself, a ``Notice(kind="loop")`` follows the step where it did, once per
answer (per sequence of a batch); the answer itself goes on unchanged.

Finish reasons: ``stop`` (an end-of-sequence id or a stop string), ``length``
(``max_tokens``, or prompt + answer reached the context), ``cancelled`` (the
``cancel`` event, checked before every forward), ``error`` (NaN/Inf logits;
``Done.error`` says why). Whatever the reason, ``cached_ids`` always describes the
cache exactly (prompt + every token fed back), so the next turn reuses it. The
``weights_version`` callable (the engine's adapter manager's) tells it when the
model's effective weights changed (a LoRA loaded, scaled, switched or merged): the
cached prefix is then dropped. :meth:`reset` drops it by hand.

One stream at a time per Generator: a second concurrent call raises GenerationError.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from chatcli.engine.answer_builder import AnswerBuilder
from chatcli.engine.answer_clock import AnswerClock
from chatcli.engine.batch_stream import BatchStreams
from chatcli.engine.calibration.threads import phase_threads
from chatcli.engine.events import Done, Notice, Step
from chatcli.engine.loop_watch import watch_loops
from chatcli.model.decode_step import DecodeStep
from chatcli.model.kv_cache import KVCache
from chatcli.engine.params import SamplingParams
from chatcli.engine.sampling import make_generator
from chatcli.engine.step_stats import sample_rows
from chatcli.errors import GenerationError

if TYPE_CHECKING:
    from chatcli.model.compiled.step import CompiledDecoder

PREFILL_CHUNK = 512  # prompt tokens per forward: bounds activation memory, lets cancel act mid-prompt


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


PROBE_WAIT_S = 30.0  # how long an answer waits for a probe that holds the model


class Generator(BatchStreams):
    """Generates answers from one model, keeping its KV cache across turns."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        device: torch.device | str | None = None,
        prefill_chunk: int = PREFILL_CHUNK,
        weights_version: Callable[[], int] = lambda: 0,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.config = model.config
        self.device = torch.device(device) if device is not None else model.device
        self.prefill_chunk = prefill_chunk
        self.cache: KVCache | None = None
        self.cached_ids: list[int] = []
        self.weights_version = weights_version  # changes when the model's effective weights change
        self._cache_weights = weights_version()  # the weights cached_ids were run under
        self.forwarded_tokens = 0  # every position ever run through the model (tests read it)
        self.last_seed: int | None = None
        self.last_seeds: list[int] = []
        self._lock = threading.Lock()
        self._streaming = False  # the lock is held by an answer (not by a short read of the model)
        self.compiled: CompiledDecoder | None = None  # --compile: the decode steps come from it

    # ---- cache ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the cached prefix (call after the weights change, e.g. a LoRA toggled)."""
        self.cached_ids = []
        if self.cache is not None:
            self.cache.reset()

    def _prefix_cache(self) -> KVCache:
        if self.cache is None:
            self.cache = KVCache(self.config, 1, self.model.dtype, self.device)
        weights = self.weights_version()
        if self.cache.length != len(self.cached_ids) or weights != self._cache_weights:
            # An interrupted forward, or an adapter changed the weights: trust nothing.
            self.reset()
            self._cache_weights = weights
        return self.cache

    @torch.inference_mode()
    def _forward(self, ids: Sequence[int] | torch.Tensor, cache: KVCache, need_logits: bool = True) -> torch.Tensor | None:
        """Run new tokens through the model; return the last position's logits [B, V] (float32)."""
        x = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        x = x.view(1, -1) if x.dim() == 1 else x  # [B, S]
        self.forwarded_tokens += x.numel()
        if not need_logits:
            self.model.hidden_states(x, cache)
            return None
        return self.model(x, cache, last_only=True)[:, -1].float()  # [B, V]

    def _step(self, cache: KVCache, total: int):
        """The decode step for one answer needing ``total`` positions of ``cache``: compiled with
        ``--compile`` when the model is covered, else the eager lean step (None: the forward)."""
        if self.compiled is not None:
            return self.compiled.step(self.model, cache, total)
        return DecodeStep.build(self.model)

    def _decode(self, ids: Sequence[int] | torch.Tensor, cache: KVCache, step: DecodeStep | None) -> torch.Tensor:
        """One new token per row (ids [B] or [B, 1]) -> logits [B, V] (float32), through the lean
        decode step when there is one (the same numbers as :meth:`_forward`, fewer operations)."""
        x = torch.as_tensor(ids, dtype=torch.long, device=self.device).view(-1, 1)  # [B, 1]
        if step is None:
            return self._forward(x, cache)
        self.forwarded_tokens += x.shape[0]
        return step(x, cache).float()

    def _prefill(self, prompt: list[int], cancel: threading.Event | None) -> tuple[torch.Tensor | None, int]:
        """Bring the prefix cache to ``prompt``; return (last logits [1, V] or None if cancelled, tokens forwarded)."""
        phase_threads(self.model, "prefill")  # threads per phase: chatcli.engine.calibration.threads
        cache = self._prefix_cache()
        keep = min(common_prefix_len(self.cached_ids, prompt), len(prompt) - 1)  # re-run >= 1 for its logits
        cache.truncate(keep)
        del self.cached_ids[keep:]
        rest = prompt[keep:]
        logits = None
        for i in range(0, len(rest), self.prefill_chunk):
            if cancel is not None and cancel.is_set():
                return None, i
            chunk = rest[i : i + self.prefill_chunk]
            last = i + self.prefill_chunk >= len(rest)
            logits = self._forward(chunk, cache, need_logits=last)
            self.cached_ids.extend(chunk)
        phase_threads(self.model, "decode")  # both streams decode right after their prefill
        return logits, len(rest)

    # ---- validation ----------------------------------------------------------------------

    def _context(self, context_length: int | None) -> int:
        limit = self.config.context_length
        return limit if context_length is None else min(context_length, limit)

    def _check_prompt(self, prompt: list[int], ctx: int) -> None:
        if not prompt:
            raise GenerationError("the prompt is empty: give the model some text to continue")
        bad = [i for i in prompt if not 0 <= i < self.config.vocab_size]
        if bad:
            raise GenerationError(
                f"prompt token id {bad[0]} is outside the model's vocabulary of {self.config.vocab_size}: "
                "the tokenizer does not match the model"
            )
        if len(prompt) >= ctx:
            raise GenerationError(
                f"the prompt has {len(prompt)} tokens but the context holds {ctx}: "
                "shorten the conversation or start a new one"
            )

    @contextmanager
    def idle(self) -> Iterator[None]:
        """Hold the model while no answer runs (weight changes wait for no stream; one that
        is running makes this raise, so a load during an answer is refused, not interleaved)."""
        if not self._lock.acquire(blocking=False):
            raise GenerationError("an answer is being generated: wait for it to finish or stop it (Esc)")
        try:
            yield
        finally:
            self._lock.release()

    def _acquire(self) -> None:
        # Another answer holds the model: refuse at once. A probe holds it (what-if, the lens, an
        # adapter check: reads that take a moment): wait for it, so a message sent right after
        # selecting a token is answered instead of failing.
        if not self._lock.acquire(blocking=False):
            if self._streaming or not self._lock.acquire(timeout=PROBE_WAIT_S):
                raise GenerationError("this model is already generating: wait for that answer or cancel it")
        self._streaming = True

    def _release(self) -> None:
        phase_threads(self.model, "idle")
        self._streaming = False
        self._lock.release()

    # ---- one answer ------------------------------------------------------------------------

    def stream(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams | Callable[[], SamplingParams],
        cancel: threading.Event | None = None,
        eos_ids: Sequence[int] | None = None,
        context_length: int | None = None,
        answer_prefix: Sequence[int] = (),
    ) -> Iterator[Step | Done | Notice]:
        """Answer ``prompt_ids``.

        ``params`` may be a callable returning the current parameters: temperature, top-k,
        top-p, min-p, repetition penalty and top_n are read again before every token (a
        ``/set`` during an answer acts on the next token); seed, stop strings and max_tokens
        are fixed at the start. ``answer_prefix``: answer tokens already decided (shown
        earlier); they are fed with the prompt and the new steps continue after them.
        ``eos_ids`` defaults to the tokenizer's; ``()`` disables end-of-sequence."""
        prompt = [int(i) for i in prompt_ids] + [int(i) for i in answer_prefix]
        ctx = self._context(context_length)
        self._check_prompt(prompt, ctx)
        self._acquire()
        try:
            yield from watch_loops(self._stream(prompt, params, cancel, eos_ids, ctx, list(answer_prefix)), params,
                                   prime_ids=list(answer_prefix), token_text=self.tokenizer.token_text)
        finally:
            self._release()

    def _stream(self, prompt, params_in, cancel, eos_ids, ctx, prefix) -> Iterator[Step | Done]:
        current = params_in if callable(params_in) else (lambda: params_in)
        params = current()
        clock = AnswerClock()
        seed = params.seed if params.seed is not None else random.SystemRandom().randrange(2**31)
        self.last_seed = seed
        gen = make_generator(seed, self.device)
        eos = self.tokenizer.eos_ids if eos_ids is None else eos_ids
        answer = AnswerBuilder(self.tokenizer, params.stop, eos, prime_ids=prefix)
        self._prefix_cache().ensure(min(len(prompt) + params.max_tokens, ctx))

        def done(reason: str, error: str | None = None) -> Done:
            return Done(
                finish_reason=reason,
                prompt_tokens=len(prompt),
                completion_tokens=answer.count,
                ttft_s=clock.ttft(),
                tokens_per_s=clock.rate(answer.count),
                text=answer.text,
                error=error,
                prefilled_tokens=prefilled,
            )

        logits, prefilled = self._prefill(prompt, cancel)
        step = self._step(self.cache, min(len(prompt) + params.max_tokens, ctx))  # per answer: nothing changes the weights while it runs
        yield from self._compile_notices()  # "compiling ..." before the first token, not after it
        seen = list(prompt)  # for the repetition penalty (transformers counts the prompt too)
        sampled_count = 0
        while True:
            if logits is None or (cancel is not None and cancel.is_set()):
                yield from self._emit(answer.finish(), clock)
                yield done("cancelled")
                return
            now = current() if callable(params_in) else params
            history = torch.tensor([seen], dtype=torch.long) if now.repetition_penalty != 1.0 else None
            got = sample_rows(logits, now, history, [gen], [0], self.tokenizer.token_text)[0]
            if isinstance(got, str):
                yield from self._emit(answer.finish(), clock)
                yield done("error", got)
                return
            sampled_count += 1
            steps, ended = answer.add(got.id, got.prob, got.model_prob, got.entropy, got.top)
            yield from self._emit(steps, clock)
            if ended:
                yield done("stop")
                return
            if sampled_count >= params.max_tokens or len(prompt) + sampled_count >= ctx:
                yield from self._emit(answer.finish(), clock)
                yield done("length")
                return
            seen.append(got.id)
            # Fed before the cancel check above, so a cancelled answer leaves the cache
            # holding exactly prompt + every emitted token.
            logits = self._decode([got.id], self.cache, step)
            self.cached_ids.append(got.id)
            if self.compiled is not None and self.compiled.pending:  # a compile that failed on this step
                yield from self._compile_notices()

    def _compile_notices(self) -> Iterator[Notice]:
        """What ``--compile`` told since the last call (compiling, not covered, failed), as Notices."""
        if self.compiled is not None:
            for line, kind in self.compiled.drain():
                yield Notice(line, kind=kind)

    @staticmethod
    def _emit(steps: list[Step], clock: AnswerClock) -> Iterator[Step]:
        for s in steps:
            clock.tick()
            yield s

    def generate(self, prompt_ids: Sequence[int], params: SamplingParams, **kwargs) -> str:
        """The whole answer as a string (raises GenerationError if generation failed)."""
        done = None
        for ev in self.stream(prompt_ids, params, **kwargs):
            if isinstance(ev, Done):
                done = ev
        assert done is not None
        if done.finish_reason == "error":
            raise GenerationError(done.error or "generation failed")
        return done.text
