"""A bounded load test on loopback: 8 concurrent streaming clients x 20 requests on the tiny model.

No errors, no lost or mixed-up streams (each stream's text is the one its seed and prompt give
when asked alone), every stream ends with [DONE] and its usage. Prints the throughput."""

from __future__ import annotations

import threading
import time

import pytest

from tests.serve_support import MODEL_ID, client, served, tiny_engine

CLIENTS, REQUESTS, MAX_TOKENS = 8, 20, 8
PROMPTS = ["Paris is the capital of", "The quick brown fox", "def add(a, b):", "Weather today:"]
CONFIGS = [(PROMPTS[i % len(PROMPTS)], 100 + i) for i in range(16)]  # (prompt, seed)


def ask(c, prompt: str, seed: int, stream: bool) -> tuple[str, int]:
    kwargs = dict(model=MODEL_ID, messages=[{"role": "user", "content": prompt}], temperature=1.0, seed=seed,
                  max_tokens=MAX_TOKENS)  # fmt: skip
    if not stream:
        r = c.chat.completions.create(**kwargs)
        return r.choices[0].message.content, r.usage.completion_tokens
    text, tokens = "", None
    for chunk in c.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    assert tokens is not None, "the stream ended without its usage chunk"
    return text, tokens


@pytest.mark.timeout(120)
def test_concurrent_streams_are_not_mixed_up(tiny_model_dir):
    with served(tiny_engine(tiny_model_dir)) as server:
        alone = [ask(client(server), p, s, stream=False)[0] for p, s in CONFIGS]
        assert len(set(alone)) > len(PROMPTS)  # seeds matter, so a mix-up would show
        results: dict[tuple[int, int], tuple[str, int]] = {}
        errors: list[BaseException] = []

        def worker(w: int) -> None:
            c = client(server)
            try:
                for j in range(REQUESTS):
                    prompt, seed = CONFIGS[(w * REQUESTS + j) % len(CONFIGS)]
                    results[w, j] = ask(c, prompt, seed, stream=True)
            except BaseException as e:  # reported below, with the others
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(CLIENTS)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(110)
        elapsed = time.perf_counter() - start
    assert not errors, errors[:3]
    assert len(results) == CLIENTS * REQUESTS
    for (w, j), (text, _) in results.items():
        assert text == alone[(w * REQUESTS + j) % len(CONFIGS)], (w, j)
    tokens = sum(n for _, n in results.values())
    print(f"\nserve load: {CLIENTS} clients x {REQUESTS} streamed requests in {elapsed:.2f} s: "
          f"{len(results) / elapsed:.1f} requests/s, {tokens / elapsed:.0f} tokens/s")  # fmt: skip
