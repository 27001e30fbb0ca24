"""What keeps a quantised load small (issue 18): the tied lookup from the int8 head's rows,
quantising a block of rows at a time, giving back the file pages read, and a bfloat16
checkpoint quantised before it is widened to float32. The memory figures themselves are
measured on the real model (benchmarks/PERFLOG.md); these tests hold the numbers unchanged."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from chatcli.engine.loader import load_engine
from chatcli.hub.checkpoint import load_checkpoint
from chatcli.model import quantize as quantize_mod
from chatcli.model.int4 import Int4Linear
from chatcli.model.int8 import Int8Linear
from chatcli.model.int8_embedding import Int8Embedding
from chatcli.model.lora_linear import Replacement, ReplacedModule
from chatcli.model.page_release import drop_file_pages, trim_heap
from chatcli.model.qlinear import float_dtype_device, weight_shape
from chatcli.model.quantize import quantize_model
from tests.lora_helpers import IDS


def test_the_lookup_reads_exactly_the_heads_dequantised_rows(tiny_model_dir):
    model = load_checkpoint(tiny_model_dir)
    table = model.model.embed_tokens.weight.detach().clone()
    quantize_model(model, "int4")
    emb, head = model.model.embed_tokens, model.lm_head
    assert isinstance(emb, Int8Embedding) and emb.head is head
    want = head.dequantize(torch.float32)[IDS]
    assert torch.equal(emb(IDS), want)  # bit for bit the rows the head multiplies by
    assert emb.matches(table)  # the float table it replaced quantises to those rows
    assert (want - table[IDS]).abs().max() <= head.scales.float().max() / 2  # int8's half step
    assert float_dtype_device(emb) == (torch.float32, torch.device("cpu")) and weight_shape(emb) == tuple(table.shape)
    model.to(torch.bfloat16)  # follows the head's compute dtype; the int8 rows stay
    assert emb(IDS).dtype == torch.bfloat16 and model.dtype == torch.bfloat16
    assert torch.equal(emb(IDS), head.dequantize(torch.bfloat16)[IDS])


def test_the_float_lookup_stays_when_asked_or_untied(tiny_model_dir, tiny_family_dirs):
    model = load_checkpoint(tiny_model_dir)
    quantize_model(model, "int8", embedding="float")
    assert type(model.model.embed_tokens) is nn.Embedding
    untied = load_checkpoint(tiny_family_dirs("qwen2"))
    if not untied.config.tie_word_embeddings:
        quantize_model(untied, "int8")
        assert type(untied.model.embed_tokens) is nn.Embedding
    head4 = load_checkpoint(tiny_model_dir)
    quantize_model(head4, "int4", head="int4")  # no int8 rows to read: the table stays float
    assert type(head4.model.embed_tokens) is nn.Embedding
    with pytest.raises(ValueError, match="float"):
        quantize_model(load_checkpoint(tiny_model_dir), "int8", embedding="int4")


def test_a_replacement_embedding_on_the_int8_lookup(tiny_model_dir):
    """An adapter's modules_to_save copy of embed_tokens replaces the int8 lookup while it is on."""
    model = load_checkpoint(tiny_model_dir)
    quantize_model(model, "int8")
    emb = model.model.embed_tokens
    wrapped = ReplacedModule(emb)
    new = torch.randn(weight_shape(emb), generator=torch.Generator().manual_seed(1))
    wrapped.add("a", Replacement(new, scale=1.0))
    assert torch.equal(wrapped(IDS), F.embedding(IDS, new))
    wrapped.replacements["a"].scale = 0.0
    assert torch.equal(wrapped(IDS), emb(IDS))
    assert float_dtype_device(wrapped) == (torch.float32, torch.device("cpu"))  # without dequantising


def test_quantising_in_blocks_of_rows_changes_nothing(monkeypatch):
    torch.manual_seed(0)
    lin = nn.Linear(96, 300)
    whole8, whole4 = Int8Linear.from_linear(lin), Int4Linear.from_linear(lin, 32)
    monkeypatch.setattr(quantize_mod, "ROWS_AT_ONCE", 7)  # 43 blocks, the last one short
    by8, by4 = quantize_mod._int8(lin), quantize_mod._int4(lin, 32)
    assert torch.equal(by8.qweight, whole8.qweight) and torch.equal(by8.scales, whole8.scales)
    assert torch.equal(by4.qweight, whole4.qweight) and torch.equal(by4.scales_zeros, whole4.scales_zeros)


def test_dropping_file_pages_keeps_the_values(tiny_model_dir):
    with safe_open(str(tiny_model_dir / "model.safetensors"), framework="pt", device="cpu") as f:
        t = f.get_tensor("model.embed_tokens.weight")  # a view of the mapped file
    want = t.clone()
    t.sum()  # read: resident
    assert drop_file_pages(t) > 0
    assert torch.equal(t, want)  # read again from the file
    t[200, 0] = 7.0  # (a page wholly inside t) a private copy of that page now: dropping it would lose the write
    assert drop_file_pages(t) == 0 and t[200, 0] == 7.0
    own = want.clone()  # ordinary memory is never dropped
    assert drop_file_pages(own) == 0 and torch.equal(own, want)
    assert isinstance(trim_heap(), bool)


def test_a_bfloat16_checkpoint_is_quantised_before_it_is_widened(tiny_model_dir, tmp_path):
    """Quantised from the bfloat16 weights as read (no float32 copy of the model first): the same
    int8/int4 weights as quantising the widened float32 model, and a float32 model afterwards."""
    d = tmp_path / "bf16"
    shutil.copytree(tiny_model_dir, d)
    state = load_file(str(d / "model.safetensors"))
    save_file({k: v.to(torch.bfloat16) for k, v in state.items()}, str(d / "model.safetensors"))
    for method in ("int8", "int4"):
        got = load_engine(str(d), device="cpu", quantize=method).model
        ref = load_checkpoint(d)  # float32 from the bfloat16 file, quantised afterwards
        quantize_model(ref, method)
        for (name, a), (_, b) in zip(got.named_buffers(), ref.named_buffers()):
            assert torch.equal(a, b), name
        assert got.dtype == torch.float32 and got.model.norm.weight.dtype == torch.float32
        assert all(m.dtype == torch.float32 for m in got.modules() if isinstance(m, (Int8Linear, Int4Linear)))
        with torch.no_grad():
            assert torch.equal(got(IDS), ref(IDS))
