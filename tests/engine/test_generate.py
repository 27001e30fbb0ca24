"""The step loop on the tiny random model: parity with transformers, stop conditions,
cancellation, prefix reuse, batched candidates, error events."""

from __future__ import annotations

import math
import threading

import pytest
import torch

from chatcli.hub.checkpoint import load_checkpoint
from chatcli.engine.events import Done, Step
from chatcli.engine.generate import Generator, common_prefix_len
from chatcli.engine.params import SamplingParams
from chatcli.tokenizer.tokenizer import ChatTokenizer
from chatcli.errors import GenerationError
from tests.tiny import EOS_ID, load_hf_oracle

GREEDY = SamplingParams(temperature=0, max_tokens=24)
RAW = "Hello, what is the capital of France?"
CHAT = [{"role": "user", "content": RAW}]


@pytest.fixture(scope="module")
def tok(tiny_model_dir) -> ChatTokenizer:
    return ChatTokenizer.from_dir(tiny_model_dir)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_checkpoint(tiny_model_dir)


@pytest.fixture(scope="module")
def oracle(tiny_model_dir):
    return load_hf_oracle(tiny_model_dir)


@pytest.fixture
def gen(model, tok) -> Generator:
    return Generator(model, tok)


def run(gen: Generator, ids, params=GREEDY, **kw) -> tuple[list[Step], Done]:
    events = list(gen.stream(ids, params, **kw))
    steps = [e for e in events if isinstance(e, Step)]
    assert isinstance(events[-1], Done) and all(isinstance(e, Step) for e in events[:-1])
    return steps, events[-1]


def hf_greedy(oracle, ids, n, eos=None, **kw) -> list[int]:
    """transformers' greedy continuation; without ``eos``, end-of-sequence is suppressed by min_new_tokens."""
    stop = dict(eos_token_id=eos) if eos is not None else dict(min_new_tokens=n)
    x = torch.tensor([ids])
    # An explicit mask: else transformers treats the prompt's <|im_end|> (= pad id) as padding.
    out = oracle.generate(
        x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False, pad_token_id=EOS_ID, **stop, **kw
    )
    return out[0, len(ids) :].tolist()


def test_greedy_matches_transformers_and_reports_true_probabilities(gen, tok, model, oracle):
    ids = tok.encode_chat(CHAT)
    steps, done = run(gen, ids, eos_ids=())
    got = [s.id for s in steps]
    assert got == hf_greedy(oracle, ids, GREEDY.max_tokens)
    assert done.finish_reason == "length" and done.completion_tokens == len(steps) == 24
    assert done.prompt_tokens == len(ids) == done.prefilled_tokens
    assert done.text == "".join(s.text for s in steps) == tok.decode(got)
    assert done.ttft_s > 0 and done.tokens_per_s > 0
    # Each step's numbers against a cache-free forward of the same prefix.
    with torch.no_grad():
        logits = model(torch.tensor([ids + got]))[0].float()  # [S, V]
    for k, s in enumerate(steps):
        raw = torch.softmax(logits[len(ids) + k - 1], -1)
        assert s.prob == 1.0 and s.index == k and s.rank == 1
        assert math.isclose(s.model_prob, float(raw[s.id]), rel_tol=1e-4)
        assert math.isclose(s.entropy, float(-(raw * raw.log2()).sum()), rel_tol=1e-4, abs_tol=1e-5)
        assert [t.id for t in s.top] == torch.topk(raw, 5).indices.tolist()
        assert s.top[0].prob == 1.0 and all(t.prob == 0.0 for t in s.top[1:])
        assert s.token == tok.token_text(s.id)


def test_repetition_penalty_matches_transformers(gen, tok, oracle):
    ids = tok.encode_chat(CHAT)
    params = GREEDY.with_(repetition_penalty=1.3, max_tokens=16)
    steps, _ = run(gen, ids, params, eos_ids=())
    assert [s.id for s in steps] == hf_greedy(oracle, ids, 16, repetition_penalty=1.3)


def test_same_seed_same_answer_and_seed_is_reported(gen, tok, model):
    ids = tok.encode_chat(CHAT)
    params = SamplingParams(temperature=1.0, top_k=50, max_tokens=20, seed=1234)
    a, _ = run(gen, ids, params, eos_ids=())
    b, _ = run(Generator(model, tok), ids, params, eos_ids=())
    assert [s.id for s in a] == [s.id for s in b]
    assert [s.prob for s in a] == [s.prob for s in b]
    assert gen.last_seed == 1234
    c, _ = run(gen, ids, params.with_(seed=None), eos_ids=())
    seed = gen.last_seed
    d, _ = run(gen, ids, params.with_(seed=seed), eos_ids=())
    assert [s.id for s in c] == [s.id for s in d]
    # With sampling, prob is the token's probability under the sampling distribution.
    assert any(s.prob < 1.0 for s in a) and all(0 < s.prob <= 1 for s in a)


def test_parameters_changed_during_an_answer_act_on_the_next_token(gen, tok):
    ids = tok.encode_chat(CHAT)
    greedy, _ = run(gen, ids, eos_ids=())
    calls = []

    def live() -> SamplingParams:  # what a /set during the answer does
        calls.append(1)
        return GREEDY if len(calls) <= 4 else GREEDY.with_(temperature=1.5, seed=99)

    steps, _ = run(gen, ids, live, eos_ids=())
    assert [s.id for s in steps[:3]] == [s.id for s in greedy[:3]]
    assert all(s.prob == 1.0 for s in steps[:3])  # greedy: one-hot
    assert all(s.prob < 1.0 for s in steps[3:])  # sampled at T=1.5 from then on
    assert len(steps) == GREEDY.max_tokens  # max_tokens fixed at the start


def test_eos_ends_the_answer_and_is_not_a_step(gen, tok, oracle):
    ids = tok.encode_chat(CHAT)
    free, _ = run(gen, ids, eos_ids=())
    eos = free[5].id
    first = next(i for i, s in enumerate(free) if s.id == eos)
    steps, done = run(gen, ids, eos_ids=[eos])
    assert [s.id for s in steps] == [s.id for s in free[:first]]
    assert done.finish_reason == "stop" and done.completion_tokens == first
    assert [s.id for s in steps] == hf_greedy(oracle, ids, 24, eos=eos)[:first]


def test_max_tokens_and_context_limit_give_length(gen, tok):
    ids = tok.encode_chat(CHAT)
    steps, done = run(gen, ids, GREEDY.with_(max_tokens=3), eos_ids=())
    assert len(steps) == 3 and done.finish_reason == "length"
    steps, done = run(gen, ids, eos_ids=(), context_length=len(ids) + 5)
    assert len(steps) == 5 and done.finish_reason == "length"
    with pytest.raises(GenerationError, match=f"prompt has {len(ids)} tokens"):
        run(gen, ids, context_length=len(ids))


def _stop_case(steps: list[Step], tok) -> tuple[str, int]:
    """A stop string that starts inside one token's text and ends inside a later one."""
    text = "".join(s.text for s in steps)
    starts, pos = [], 0
    for s in steps:
        starts.append(pos)
        pos += len(s.text)
    for k in range(2, len(steps) - 3):
        a, b = starts[k], starts[k + 2]
        if len(steps[k].text) >= 2 and "\ufffd" not in text[: b + 2] and b + 2 <= len(text):
            stop = text[a + 1 : b + 1]  # from inside token k to inside token k+2
            if text.find(stop) == a + 1:
                return stop, k
    raise AssertionError("the tiny model's greedy text has no suitable stop string")


def test_stop_string_spanning_tokens_is_cut_and_not_emitted(gen, tok):
    ids = tok.encode(RAW)  # the tiny model's plain continuation has clean multi-character tokens
    free, _ = run(gen, ids, eos_ids=())
    full = "".join(s.text for s in free)
    stop, k = _stop_case(free, tok)
    steps, done = run(gen, ids, GREEDY.with_(stop=(stop, "never-appears")), eos_ids=())
    assert done.finish_reason == "stop"
    assert done.text == full[: full.find(stop)] == "".join(s.text for s in steps)
    # Tokens before the stop string are steps; token k holds the answer's end and the stop
    # string's start, so it is a step with its head only; the tokens completing it are not.
    assert [s.id for s in steps] == [s.id for s in free[: k + 1]]
    assert steps[k].text == free[k].text[:1]
    assert done.completion_tokens == k + 1


def test_text_that_may_start_a_stop_string_is_held_then_released(gen, tok):
    ids = tok.encode_chat(CHAT)
    free, _ = run(gen, ids, eos_ids=())
    full = "".join(s.text for s in free)
    # A stop string that begins with the first step's text but never completes.
    stop = free[0].text + "\x00never"
    events = list(gen.stream(ids, GREEDY.with_(stop=(stop,)), eos_ids=()))
    steps = [e for e in events if isinstance(e, Step)]
    assert events[-1].finish_reason == "length" and events[-1].text == full
    assert [s.text for s in steps] == [s.text for s in free]  # each step keeps its own text


def test_cancel_from_another_thread_keeps_a_consistent_cache(gen, tok, model):
    ids = tok.encode_chat(CHAT)
    cancel, seen_five = threading.Event(), threading.Event()
    canceller = threading.Thread(target=lambda: (seen_five.wait(5), cancel.set()))
    canceller.start()
    steps = []
    for ev in gen.stream(ids, SamplingParams(temperature=0, max_tokens=200), cancel=cancel, eos_ids=()):
        if isinstance(ev, Step):
            steps.append(ev)
            if len(steps) == 5:
                seen_five.set()
                canceller.join()  # the other thread has set the event before the next step
        else:
            done = ev
    # Cancel acts before the next forward; steps still held then (bytes of an unfinished
    # character) are released, so there may be a few more than the 5 seen.
    assert done.finish_reason == "cancelled" and len(steps) == done.completion_tokens < 20
    answer = [s.id for s in steps]
    assert gen.cached_ids == ids + answer and gen.cache.length == len(ids) + len(answer)
    assert done.text == "".join(s.text for s in steps)

    # The next turn reuses the cache and answers exactly as a fresh generator does.
    msgs2 = CHAT + [{"role": "assistant", "content": done.text}, {"role": "user", "content": "And Italy?"}]
    ids2 = tok.encode_chat(msgs2)
    before = gen.forwarded_tokens
    steps2, done2 = run(gen, ids2, eos_ids=())
    fresh, fresh_done = run(Generator(model, tok), ids2, eos_ids=())
    assert [s.id for s in steps2] == [s.id for s in fresh]
    for a, b in zip(steps2, fresh):
        assert math.isclose(a.model_prob, b.model_prob, rel_tol=1e-4, abs_tol=1e-6)
    reused = next(i for i, (a, b) in enumerate(zip(ids + answer, ids2)) if a != b)
    assert done2.prefilled_tokens == len(ids2) - reused < fresh_done.prefilled_tokens
    assert gen.forwarded_tokens - before == done2.prefilled_tokens + len(steps2) - 1


def test_cancel_before_the_first_token(gen, tok):
    cancel = threading.Event()
    cancel.set()
    steps, done = run(gen, tok.encode_chat(CHAT), cancel=cancel)
    assert steps == [] and done.finish_reason == "cancelled" and done.ttft_s is None


def test_second_turn_forwards_only_new_tokens(gen, tok):
    ids = tok.encode_chat(CHAT)
    steps1, d1 = run(gen, ids, GREEDY.with_(max_tokens=8), eos_ids=())
    assert d1.prefilled_tokens == len(ids)
    # The cache holds the prompt and the answer but its last token (sampled, never fed).
    assert gen.cached_ids == ids + [s.id for s in steps1][:7]
    msgs2 = CHAT + [{"role": "assistant", "content": d1.text}, {"role": "user", "content": "Thanks!"}]
    ids2 = tok.encode_chat(msgs2)
    reused = common_prefix_len(gen.cached_ids, ids2)
    assert reused >= len(ids)  # at least the whole first prompt
    before = gen.forwarded_tokens
    _, d2 = run(gen, ids2, GREEDY.with_(max_tokens=1), eos_ids=())
    assert d2.prefilled_tokens == len(ids2) - reused < len(ids2) - len(ids) + 1
    assert gen.forwarded_tokens - before == d2.prefilled_tokens  # max_tokens=1: no decode forward
    assert gen.cached_ids == ids2
    # Same prompt again: only the last prompt token is re-run (its logits are needed).
    _, d3 = run(gen, ids2, GREEDY.with_(max_tokens=1), eos_ids=())
    assert d3.prefilled_tokens == 1


def test_a_new_weights_version_drops_the_cached_prefix(model, tok):
    version = [0]
    gen = Generator(model, tok, weights_version=lambda: version[0])
    ids = tok.encode_chat(CHAT)
    one = GREEDY.with_(max_tokens=1)
    assert run(gen, ids, one, eos_ids=())[1].prefilled_tokens == len(ids)
    assert run(gen, ids, one, eos_ids=())[1].prefilled_tokens == 1
    version[0] += 1  # the weights changed (an adapter loaded, scaled, merged...)
    assert run(gen, ids, one, eos_ids=())[1].prefilled_tokens == len(ids)


def test_answer_prefix_continues_where_the_answer_stopped(gen, tok):
    ids = tok.encode_chat(CHAT)
    free, _ = run(gen, ids, eos_ids=())
    head = [s.id for s in free[:6]]
    steps, done = run(gen, ids, GREEDY.with_(max_tokens=10), eos_ids=(), answer_prefix=head)
    assert [s.id for s in steps] == [s.id for s in free[6:16]]
    assert done.prompt_tokens == len(ids) + 6


def test_greedy_batch_equals_sequential(gen, tok, model):
    ids = tok.encode_chat(CHAT)
    seq_steps, seq_done = run(Generator(model, tok), ids, GREEDY.with_(max_tokens=12), eos_ids=())
    events = list(gen.stream_batch(ids, GREEDY.with_(max_tokens=12), 3, eos_ids=()))
    dones = {e.seq: e for e in events if isinstance(e, Done)}
    assert sorted(dones) == [0, 1, 2]
    for r in range(3):
        rows = [e for e in events if isinstance(e, Step) and e.seq == r]
        assert [s.id for s in rows] == [s.id for s in seq_steps]
        assert [s.index for s in rows] == list(range(12))
        for a, b in zip(rows, seq_steps):
            assert math.isclose(a.model_prob, b.model_prob, rel_tol=1e-4, abs_tol=1e-6)
        assert dones[r].text == seq_done.text and dones[r].finish_reason == "length"
    # The prefix cache was left holding the prompt, ready for the next turn.
    assert gen.cached_ids == ids


def test_sampled_batch_rows_have_their_own_seeds(gen, tok):
    ids = tok.encode_chat(CHAT)
    params = SamplingParams(temperature=1.0, max_tokens=10, seed=7)

    def rows(**kw):
        evs = list(gen.stream_batch(ids, params, 4, eos_ids=(), **kw))
        return [[e.id for e in evs if isinstance(e, Step) and e.seq == r] for r in range(4)]

    a = rows()
    assert gen.last_seeds == [7, 8, 9, 10]
    assert rows(seeds=[7, 8, 9, 10]) == a
    assert len({tuple(r) for r in a}) > 1  # rows differ
    b = rows(seeds=[10, 9, 8, 7])
    assert b[0] == a[3] and b[3] == a[0]


def test_sampled_batch_row_equals_the_single_answer_with_its_seed(gen, tok, model):
    """Each row draws from its own generator exactly as a single answer does, so /rank's
    candidate i can be reproduced alone with seed i."""
    ids = tok.encode_chat(CHAT)
    params = SamplingParams(temperature=1.0, top_p=0.95, max_tokens=12, seed=21)
    evs = list(gen.stream_batch(ids, params, 3, eos_ids=()))
    for r in range(3):
        single, _ = run(Generator(model, tok), ids, params.with_(seed=21 + r), eos_ids=())
        assert [e.id for e in evs if isinstance(e, Step) and e.seq == r] == [s.id for s in single]


def test_batch_rows_stop_independently(gen, tok):
    ids = tok.encode_chat(CHAT)
    params = SamplingParams(temperature=1.0, max_tokens=30, seed=3)
    evs = list(gen.stream_batch(ids, params, 3, eos_ids=()))
    rows = [[e for e in evs if isinstance(e, Step) and e.seq == r] for r in range(3)]
    eos = rows[0][4].id  # row 0 stops at its 5th token (or earlier if it occurred before)
    evs2 = list(gen.stream_batch(ids, params, 3, eos_ids=[eos]))
    for r in range(3):
        got = [e.id for e in evs2 if isinstance(e, Step) and e.seq == r]
        ref = [s.id for s in rows[r]]
        cut = ref.index(eos) if eos in ref else len(ref)
        assert got == ref[:cut]
        d = next(e for e in evs2 if isinstance(e, Done) and e.seq == r)
        assert d.finish_reason == ("stop" if eos in ref else "length")


class _NaNAfter:
    """Wraps a model; its logits turn to NaN after ``n`` calls."""

    def __init__(self, model, n):
        self._model, self.n, self.calls = model, n, 0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, *args, **kwargs):
        out = self._model(*args, **kwargs)
        self.calls += 1
        return torch.full_like(out, float("nan")) if self.calls > self.n else out


def test_nan_logits_end_with_an_error_event(model, tok):
    gen = Generator(_NaNAfter(model, 4), tok)
    ids = tok.encode_chat(CHAT)
    steps, done = run(gen, ids, eos_ids=())
    assert done.finish_reason == "error" and "NaN" in done.error and "\n" not in done.error
    assert len(steps) == 4 and done.text == "".join(s.text for s in steps)
    assert gen.cached_ids == ids + [s.id for s in steps]
    with pytest.raises(GenerationError, match="NaN"):
        Generator(_NaNAfter(model, 0), tok).generate(ids, GREEDY)


def test_one_stream_at_a_time(gen, tok):
    ids = tok.encode_chat(CHAT)
    first = gen.stream(ids, GREEDY)
    next(first)
    with pytest.raises(GenerationError, match="already generating"):
        next(gen.stream(ids, GREEDY))
    first.close()  # closing releases the model
    assert gen.generate(ids, GREEDY.with_(max_tokens=2), eos_ids=())


def test_an_answer_waits_for_a_probe_that_holds_the_model(gen, tok):
    # A probe (what-if, lens) holds the model for a moment on another thread: a message sent
    # meanwhile is answered once the probe is done, not refused as "already generating".
    ids = tok.encode_chat(CHAT)
    holding, release = threading.Event(), threading.Event()

    def probe() -> None:
        with gen.idle():
            holding.set()
            release.wait(5)

    t = threading.Thread(target=probe)
    t.start()
    holding.wait(5)
    threading.Timer(0.2, release.set).start()
    steps, done = run(gen, ids, GREEDY.with_(max_tokens=2), eos_ids=())
    t.join()
    assert done.finish_reason == "length" and len(steps) == 2


def test_bad_prompts_are_refused(gen):
    with pytest.raises(GenerationError, match="empty"):
        next(gen.stream([], GREEDY))
    with pytest.raises(GenerationError, match="vocabulary"):
        next(gen.stream([1, 10**6], GREEDY))


# ---- the real default model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    from tests.e2e_model import default_model_dir

    path = default_model_dir(tmp_path_factory)
    return path, load_checkpoint(path), ChatTokenizer.from_dir(path)


@pytest.mark.e2e
def test_smollm2_greedy_matches_transformers_and_knows_paris(smollm2):
    path, model, tok = smollm2
    gen = Generator(model, tok)
    ids = tok.encode_chat([{"role": "user", "content": "What is the capital of France?"}])
    steps, done = run(gen, ids, SamplingParams(temperature=0, max_tokens=32))
    print(f"smollm2 greedy: ttft {done.ttft_s:.3f} s, {done.tokens_per_s or 0:.1f} tok/s, {done.text!r}")
    assert "Paris" in done.text and done.finish_reason == "stop"
    oracle = load_hf_oracle(path)
    assert [s.id for s in steps] == hf_greedy(oracle, ids, 32, eos=list(tok.eos_ids))[: len(steps)]


@pytest.mark.e2e
def test_smollm2_streams_chinese_and_emoji_whole(smollm2):
    _, model, tok = smollm2
    gen = Generator(model, tok)
    ids = tok.encode("小模型一次生成一个词元，每一步都有一个概率分布。🙂 我们")
    steps, done = run(gen, ids, SamplingParams(temperature=0, max_tokens=24), eos_ids=())
    assert done.text == tok.decode([s.id for s in steps]) == "".join(s.text for s in steps)
    assert all("\ufffd" not in s.text for s in steps)


@pytest.mark.e2e
def test_smollm2_greedy_batch_equals_sequential(smollm2):
    _, model, tok = smollm2
    gen = Generator(model, tok)
    ids = tok.encode_chat([{"role": "user", "content": "Name three colours."}])
    params = SamplingParams(temperature=0, max_tokens=12)
    seq, _ = run(gen, ids, params)
    events = list(gen.stream_batch(ids, params, 2))
    for r in range(2):
        assert [e.id for e in events if isinstance(e, Step) and e.seq == r] == [s.id for s in seq]
