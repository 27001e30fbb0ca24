"""Seeded fuzzing of the JSONL data readers: chatcli's own reader, the rank plugin's prompt and
candidate readers, and the fine-tuning readers for SFT and preference data (encoded with the tiny
tokenizer). Every mutant of a valid file (damaged bytes, invalid UTF-8, lone surrogates, deep
nesting, huge numbers, values of the wrong type) ends in records plus per-line errors, or in one
ChatcliError, within a time limit: never another exception.

A case that fails names its seed and index, so it can be replayed alone.
"""

from __future__ import annotations

import json
import random
import time

import pytest

from chatcli.errors import ChatcliError
from chatcli.jsonl import read_objects
from chatcli.tokenizer.tokenizer import ChatTokenizer
from chatcli_finetune.data import Encoder, load_examples
from chatcli_rank.jsonl import read_candidates, read_prompts

SEED = 2718
CASES = 300
LIMIT_S = 3.0

SFT = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."}]}
PREF = {"prompt": [{"role": "user", "content": "Colour?"}], "chosen": [{"role": "assistant", "content": "Blue."}],
        "rejected": [{"role": "assistant", "content": "No."}]}  # fmt: skip
PROMPT = {"prompt": "Name a colour.", "id": "p1"}
CANDIDATES = {"prompt": [{"role": "user", "content": "Hi"}], "candidates": ["Hello.", "Hey."], "id": "q1"}
VALUES = [None, True, 0, -1, 2**70, 1e308, "", "x" * 5000, "\ud83d", [], {}, [[[]]], {"role": 5}, "🙂", "\0"]


def _mutate(rng: random.Random, doc) -> bytes:
    """One hostile variant of ``doc`` written as a JSONL file's bytes."""
    kind = rng.randrange(7)
    if kind == 0:  # a value of the wrong type somewhere
        d = json.loads(json.dumps(doc))
        key = rng.choice(list(d))
        d[key] = rng.choice(VALUES)
        text = json.dumps(d)
    elif kind == 1:  # deep nesting
        depth = rng.choice([10, 65, 1000, 100_000])
        text = '{"prompt": ' + "[" * depth + "]" * depth + "}"
    elif kind == 2:  # a lone surrogate escape inside a string
        text = json.dumps(doc).replace("\\u", "\\u").replace('"', '"\\ud83d', 1)
    elif kind == 3:  # damaged bytes
        raw = bytearray(json.dumps(doc, ensure_ascii=False).encode())
        for _ in range(rng.randrange(1, 6)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw) + b"\n"
    elif kind == 4:  # huge numbers, NaN and friends
        text = json.dumps(doc)[:-1] + ', "n": ' + rng.choice(["1" * 5000, "NaN", "Infinity", "-1e999", "1e-999"]) + "}"
    elif kind == 5:  # not an object at all
        text = rng.choice(["[]", "5", '"text"', "null", "{", "}{", "\x00"])
    else:  # truncated
        text = json.dumps(doc)
        text = text[: rng.randrange(len(text))]
    lines = [json.dumps(doc), text] if rng.random() < 0.5 else [text]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module")
def encoder(tok_dir):
    return Encoder(ChatTokenizer.from_dir(tok_dir))


READERS = {
    "objects": (PROMPT, lambda path, enc: read_objects(path)),
    "prompts": (PROMPT, lambda path, enc: read_prompts(path)),
    "candidates": (CANDIDATES, lambda path, enc: read_candidates(path)),
    "sft": (SFT, lambda path, enc: load_examples(path, enc, "sft", 256)),
    "pref": (PREF, lambda path, enc: load_examples(path, enc, "pref", 256)),
}


@pytest.mark.parametrize("name", sorted(READERS))
def test_every_mutant_is_records_or_one_clean_error(name, tmp_path, encoder):
    doc, read = READERS[name]
    rng = random.Random(f"{SEED}-{name}")
    path = tmp_path / "data.jsonl"
    outcomes = {"ok": 0, "refused": 0}
    for i in range(CASES):
        path.write_bytes(_mutate(rng, doc))
        start = time.monotonic()
        try:
            read(path, encoder)
            outcomes["ok"] += 1
        except ChatcliError as e:
            assert "\n" not in e.message.strip(), (name, i, e.message)
            outcomes["refused"] += 1
        except Exception as e:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{name} case {i} (seed {SEED}): {type(e).__name__}: {e}\n{path.read_bytes()[:300]!r}")
        assert time.monotonic() - start < LIMIT_S, (name, i)
    assert outcomes["ok"] and outcomes["refused"]  # the mutants reach both outcomes
