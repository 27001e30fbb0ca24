"""The lean decode step gives the model's forward numbers bit for bit, and the same cache."""

from __future__ import annotations

import pytest
import torch

from chatcli.hub.checkpoint import load_checkpoint
from chatcli.model.decode_step import DecodeStep
from chatcli.model.kv_cache import KVCache
from chatcli.model.quantize import quantize_model
from tests.tiny import FAMILIES


def _compare(model, rows: int, steps: int = 6) -> None:
    """Decode ``steps`` tokens per row with the forward and with the step from one prefilled
    cache: logits and every cached key/value must be equal to the bit."""
    step = DecodeStep.build(model)
    assert step is not None
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, model.config.vocab_size, (rows, 7), generator=gen)
    with torch.inference_mode():
        a = KVCache(model.config, rows, model.dtype, "cpu")
        a.ensure(7 + steps)  # reserved once, as the generator does for prompt + answer
        model(prompt, a)
        b = a.clone()
        ids = prompt[:, -1:]
        for _ in range(steps):
            want = model(ids, a, last_only=True)[:, -1]
            got = step(ids, b)
            assert torch.equal(want, got)
            assert a.length == b.length
            ids = want.float().argmax(-1, keepdim=True)
        n = a.length
        for x, y in zip(a.keys + a.values, b.keys + b.values):
            assert torch.equal(x[:, :, :n], y[:, :, :n])


@pytest.mark.parametrize("family", FAMILIES)
def test_step_equals_the_forward_bit_for_bit(family, tiny_family_dirs):
    model = load_checkpoint(tiny_family_dirs(family))
    _compare(model, rows=1)
    _compare(model, rows=3)  # batched candidates


@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_step_equals_the_forward_in_bfloat16(dtype, tiny_model_dir):
    _compare(load_checkpoint(tiny_model_dir).to(dtype), rows=2)


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_step_equals_the_forward_quantized(method, tiny_model_dir):
    model = load_checkpoint(tiny_model_dir)
    quantize_model(model, method)
    _compare(model, rows=1)


def test_unpacked_model_calls_its_modules(tiny_model_dir):
    _compare(load_checkpoint(tiny_model_dir, pack=False), rows=1)


def test_no_step_for_training_or_hooks(tiny_model_dir):
    model = load_checkpoint(tiny_model_dir)
    assert DecodeStep.build(model.train()) is None
    model.eval()
    handle = model.model.layers[0].register_forward_pre_hook(lambda m, a: None)
    try:
        assert DecodeStep.build(model) is None  # a hook sees module calls the step does not make
    finally:
        handle.remove()
    assert DecodeStep.build(model) is not None


def test_rope_table_rows_are_the_forward_of_each_position(tiny_model_dir):
    rotary = load_checkpoint(tiny_model_dir).model.rotary_emb
    for dtype in (torch.float32, torch.bfloat16):
        cos, sin = rotary.table(300, dtype)
        assert cos.shape[0] >= 300
        for p in (0, 1, 17, 255, 256, 299):
            c, s = rotary(torch.tensor([[p]]), dtype)
            assert torch.equal(cos[p], c.view(1, -1)) and torch.equal(sin[p], s.view(1, -1))
