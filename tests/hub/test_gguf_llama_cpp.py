"""Exports read by llama.cpp itself (through llama-cpp-python; skipped where it is not installed).

The tiny model's export gives llama.cpp's logits equal to chatcli's on the same (f16-rounded)
weights and llama.cpp's tokenizer the same ids as chatcli's; a GGUF LoRA applied by llama.cpp
equals the merged export; and, where the default model is here, its q8_0 export answers the
README's question through llama.cpp's own chat template handling.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chatcli.hub.checkpoint import load_checkpoint, meta_model, read_model_config
from chatcli.hub.gguf.exporter import export_gguf
from chatcli.hub.gguf.lora_file import LoraPair, write_gguf_lora
from chatcli.lora.manager import AdapterManager
from chatcli.lora.peft_io import read_adapter
from chatcli.model.lora_linear import lora_scaling
from chatcli.tokenizer.tokenizer import ChatTokenizer
from tests.lora_helpers import peft_model, save_peft

llama_cpp = pytest.importorskip("llama_cpp")

IDS = [1, 5, 77, 200, 3, 42, 9, 310, 2, 1, 17, 64]
TEXTS = ["The river bends twice before it reaches the old mill.", "Tabs\tand  spaces, 12 numbers 345!",
         "<|im_start|>user\nhi<|im_end|>\n"]


def _llama(path, **kw):
    return llama_cpp.Llama(model_path=str(path), n_ctx=64, logits_all=True, verbose=False, n_threads=1, **kw)


def _llama_cpp_logits(llm) -> np.ndarray:
    llm.reset()
    llm.eval(IDS)
    return np.array(llm.scores[: len(IDS)], dtype=np.float32)


@torch.no_grad()
def _f16_logits(state: dict[str, torch.Tensor], model_dir) -> np.ndarray:
    model = load_checkpoint(model_dir, dtype=torch.float32, device="cpu")
    for key, value in state.items():
        model.get_parameter(key).copy_(value.half().float() if value.dim() == 2 else value)
    return model(torch.tensor([IDS]))[0].numpy()


def _state(model_dir):
    state, _ = AdapterManager(load_checkpoint(model_dir, dtype=torch.float32, device="cpu")).merged_state_dict()
    return state


def test_llama_cpp_logits_and_tokens_match_chatcli(tiny_model_dir, tmp_path):
    state = _state(tiny_model_dir)
    export_gguf(tiny_model_dir, state, tmp_path / "m.gguf", quantize="f16")
    llm = _llama(tmp_path / "m.gguf")
    got, want = _llama_cpp_logits(llm), _f16_logits(state, tiny_model_dir)
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()
    assert (got.argmax(-1) == want.argmax(-1)).all()
    tok = ChatTokenizer.from_dir(tiny_model_dir)
    for text in TEXTS:
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == tok.encode(text), text


def test_llama_cpp_applies_our_lora_like_the_merged_export(tiny_model_dir, tmp_path):
    folder = save_peft(peft_model(tiny_model_dir, r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "up_proj"]),
                       tmp_path / "ad")
    config = read_model_config(tiny_model_dir)
    adapter = read_adapter(folder, AdapterManager(meta_model(config)).shapes)
    pairs = {m: LoraPair(A=p.A.numpy(), B=p.B.numpy(), alpha=p.alpha, scaling=lora_scaling(p.r, p.alpha, False))
             for m, p in adapter.modules.items()}
    write_gguf_lora(tmp_path / "ad.gguf", pairs, config)
    export_gguf(tiny_model_dir, _state(tiny_model_dir), tmp_path / "base.gguf", quantize="f16")
    with_lora = _llama_cpp_logits(_llama(tmp_path / "base.gguf", lora_path=str(tmp_path / "ad.gguf")))

    model = load_checkpoint(tiny_model_dir, dtype=torch.float32, device="cpu")
    mgr = AdapterManager(model)
    mgr.load(folder, name="ad")
    merged, _ = mgr.merged_state_dict()
    export_gguf(tiny_model_dir, merged, tmp_path / "merged.gguf", quantize="f16")
    want = _llama_cpp_logits(_llama(tmp_path / "merged.gguf"))
    base = _llama_cpp_logits(_llama(tmp_path / "base.gguf"))
    assert np.abs(with_lora - want).max() < 0.05 * np.abs(want).max()
    assert np.abs(base - want).max() > 0.1  # the adapter changes the answer's distribution


@pytest.mark.e2e
def test_default_model_answers_through_llama_cpp_as_in_chatcli(tmp_path):
    """f16: llama.cpp's greedy answer, through its own handling of the GGUF's chat template, is
    chatcli's. (At q8_0 llama.cpp also rounds activations to 8 bits, and the first token of this
    answer is a near tie: it then starts differently, as it does on the shipped Q4_1 file itself.)"""
    from tests.hub.test_gguf_export_default import DEFAULT_DIR

    from chatcli.hub.manifest import verify_model_dir

    if verify_model_dir(DEFAULT_DIR):
        pytest.skip("the default model is not converted on this machine")
    export_gguf(DEFAULT_DIR, _state(DEFAULT_DIR), tmp_path / "smollm2.gguf", quantize="f16")
    llm = llama_cpp.Llama(model_path=str(tmp_path / "smollm2.gguf"), n_ctx=256, verbose=False, n_threads=2)
    reply = llm.create_chat_completion(messages=[{"role": "user", "content": "What is the capital of France?"}],
                                       temperature=0.0, max_tokens=20)
    assert reply["choices"][0]["message"]["content"] == "The capital of France is Paris."
