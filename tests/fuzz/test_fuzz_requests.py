"""Seeded fuzzing of chatcli serve's request parser: random mutants of valid bodies (values of
every JSON type, lone surrogates, deep nesting, huge numbers, damaged bytes) end in a validated
request or a 4xx APIError with a one-line message, never in another exception.

A case that fails prints its seed, index and body, so it can be replayed alone.
"""

from __future__ import annotations

import json
import random

import pytest

from chatcli.serve.errors import APIError
from chatcli.serve.json_body import parse_json_body
from chatcli.serve.validate import ChatRequest, CompletionRequest, parse_adapter_request, parse_chat, parse_completion

SEED = 1414
CASES = 3000

CHAT = {"model": "tiny", "messages": [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]}], "temperature": 0.7, "top_p": 0.9,
        "max_tokens": 16, "n": 2, "stop": ["\n", "END"], "seed": 3, "logprobs": True, "top_logprobs": 2,
        "stream": True, "stream_options": {"include_usage": True}, "top_k": 5, "min_p": 0.1}  # fmt: skip
COMPLETION = {"model": "tiny", "prompt": "Once upon", "max_tokens": 8, "logprobs": 2, "echo": False, "n": 1}
LOAD = {"lora_name": "pirate", "lora_path": "pirate"}
KEYS = sorted({*CHAT, *COMPLETION, *LOAD, "best_of", "response_format", "presence_penalty", "frequency_penalty",
               "logit_bias", "tools", "functions", "suffix", "max_completion_tokens", "repetition_penalty", "x"})

PARSERS = {
    "chat": (CHAT, parse_chat),
    "completion": (COMPLETION, parse_completion),
    "load": (LOAD, lambda body: parse_adapter_request(body, with_path=True)),
    "unload": (LOAD, lambda body: parse_adapter_request(body, with_path=False)),
}

STRINGS = ["", "tiny", "user", "assistant", "system", "developer", "tool", "text", "a" * 10_000, "\ud83d", "ok\udc80",
           "\0", "🙂", "../../etc", "\n", "NaN"]  # fmt: skip
NUMBERS = [0, 1, -1, 2, 16, 20, 21, 2**63, 2**63 - 1, 10**400, -(10**30), 0.0, -0.0, 0.5, 1.5, 1e308, 1e-320,
           float("nan"), float("inf"), float("-inf"), True, False]  # fmt: skip


def value(rng: random.Random, depth: int = 0):
    roll = rng.random()
    if roll < 0.25:
        return rng.choice(STRINGS)
    if roll < 0.5:
        return rng.choice(NUMBERS)
    if roll < 0.55:
        return None
    if roll < 0.58:  # deep nesting, around the 64-level limit
        nested = rng.choice([[], {}, "x"])
        for _ in range(rng.randint(55, 75)):
            nested = [nested] if rng.random() < 0.5 else {"k": nested}
        return nested
    if depth > 3:
        return rng.choice(STRINGS)
    if roll < 0.8:
        return [value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(KEYS + ["role", "content", "type", "text"]): value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def mutate(rng: random.Random, body):
    """Change one place in ``body`` (a copy) to a random value, or drop a key."""
    body = json.loads(json.dumps(body))
    target = body
    while isinstance(target, (dict, list)) and target and rng.random() < 0.5:  # walk down a little
        key = rng.choice(list(target)) if isinstance(target, dict) else rng.randrange(len(target))
        if not isinstance(target[key], (dict, list)):
            break
        target = target[key]
    if isinstance(target, dict):
        key = rng.choice(list(target) + KEYS)
        if rng.random() < 0.2:
            target.pop(key, None)
        else:
            target[key] = value(rng)
    elif isinstance(target, list) and target:
        target[rng.randrange(len(target))] = value(rng)
    return body if rng.random() < 0.97 else value(rng)  # sometimes not an object at all


def encode(rng: random.Random, body) -> bytes:
    if rng.random() < 0.5:
        raw = json.dumps(body).encode()  # lone surrogates as \\u escapes
    else:
        raw = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")  # ... or as CESU-8 bytes
    if rng.random() < 0.15:  # damage the bytes
        i = rng.randrange(len(raw) + 1)
        raw = rng.choice([raw[:i], raw[:i] + bytes([rng.randrange(256)]) + raw[i + 1 :], raw[:i] + b"[" * 70 + raw[i:]])
    return raw


def check_request(req) -> None:
    """A request that passed is one the engine can take."""
    req.params(1)  # valid sampling parameters
    texts = [req.model, *req.sampling["stop"]]
    if isinstance(req, ChatRequest):
        assert req.messages and all(m["role"] in ("system", "user", "assistant") for m in req.messages)
        texts += [m["content"] for m in req.messages]
    elif isinstance(req, CompletionRequest):
        assert req.prompts and (req.max_tokens or req.echo)
        for prompt in req.prompts:  # a text, or token ids (checked against the vocabulary by the app)
            if isinstance(prompt, str):
                texts.append(prompt)
            else:
                assert prompt and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in prompt)
    for text in texts:
        text.encode("utf-8")  # no lone surrogates reach the tokenizer


@pytest.mark.parametrize("kind", sorted(PARSERS))
def test_random_bodies_give_a_request_or_a_400(kind):
    base, parse = PARSERS[kind]
    rng = random.Random(f"{SEED}-{kind}")
    outcomes = {"accepted": 0, "refused": 0}
    for i in range(CASES):
        body = base
        for _ in range(rng.randint(1, 3)):
            body = mutate(rng, body) if isinstance(body, dict) else body
        raw = encode(rng, body)
        try:
            result = parse(parse_json_body(raw))
        except APIError as e:
            assert 400 <= e.status < 500 and e.message and "\n" not in e.message, (i, raw[:300])
            json.dumps(e.body())  # the app sends it as ASCII JSON
            outcomes["refused"] += 1
        except Exception as e:  # pragma: no cover - the failure report
            pytest.fail(f"seed {SEED} {kind} case {i}: {type(e).__name__}: {e} from {raw[:300]!r}")
        else:
            if isinstance(result, tuple):
                assert all(isinstance(x, str) and "\0" not in x for x in result if x is not None)
                [x.encode("utf-8") for x in result if x is not None]
            else:
                check_request(result)
            outcomes["accepted"] += 1
    assert outcomes["accepted"] > CASES // 20 and outcomes["refused"] > CASES // 20, outcomes
