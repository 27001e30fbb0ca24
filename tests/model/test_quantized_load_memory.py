"""What keeps a quantised load small (issue 18): the tied lookup from the int8 head's rows,
quantising a block of rows at a time, giving back the file pages read, and a bfloat16
checkpoint quantised before it is widened to float32. The memory figures themselves are
measured on the real model (benchmarks/PERFLOG.md); these tests hold the numbers unchanged."""

from __future__ import annotations

import shutil
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from chatcli.engine.loader import load_engine
from chatcli.hub import packed_cache
from chatcli.hub.checkpoint import load_checkpoint
from chatcli.model import quantize as quantize_mod
from chatcli.model.int4 import Int4Linear
from chatcli.model.int8 import Int8Linear
from chatcli.model.int8_embedding import Int8Embedding
from chatcli.model.lora_linear import Replacement, ReplacedModule
from chatcli.model.quant_group import QuantGroup, _joined
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


def _buffers(model) -> dict[str, torch.Tensor]:
    """Every buffer of a quantised model by name, the fused groups' own included."""
    out = dict(model.named_buffers())
    for i, layer in enumerate(model.model.layers):
        for part, attr in ((layer.self_attn, "qkv_group"), (layer.mlp, "gate_up_group")):
            group = getattr(part, attr)
            if isinstance(group, QuantGroup):
                out.update({f"{i}.{attr}.{n}": t for n, t in group.fused.named_buffers()})
    return out


def _per_layer_allocations(monkeypatch) -> None:
    """Quantise as before the shared allocations: each layer its own buffers, packing copies the groups
    (quantised from the checkpoint: the cache of built models neither serves nor keeps this build)."""
    monkeypatch.setattr(quantize_mod, "_storage", lambda targets, kinds, group: [None] * len(targets))
    monkeypatch.setattr(packed_cache, "load_built", lambda key, apply: False)
    monkeypatch.setattr(packed_cache, "store_built", lambda model, key: None)


@pytest.mark.parametrize("method, group", [("int4", 32), ("int4", 64), ("int8", None)])
def test_quantised_weights_share_two_allocations_and_pack_without_a_copy(tiny_model_dir, method, group, monkeypatch):
    model = load_engine(str(tiny_model_dir), device="cpu", quantize=method, group_size=group, warm_up=False,
                        calibrate=False).model
    layers = [m for m in model.modules() if isinstance(m, (Int8Linear, Int4Linear))]
    assert len(layers) == 2 * 7 + 1  # the projections of both layers and the head
    scales = [m.scales_zeros if isinstance(m, Int4Linear) else m.scales for m in layers]
    assert len({m.qweight.untyped_storage().data_ptr() for m in layers}) == 1
    assert len({s.untyped_storage().data_ptr() for s in scales}) == 1
    for layer in model.model.layers:
        for part, group_of in ((layer.self_attn, layer.self_attn.qkv_group), (layer.mlp, layer.mlp.gate_up_group)):
            first = getattr(part, group_of.names[0])
            # The fused layer is its members' memory, not a copy of it.
            assert group_of.fused.qweight.data_ptr() == first.qweight.data_ptr()
            assert group_of.fused.qweight.untyped_storage().data_ptr() == first.qweight.untyped_storage().data_ptr()
    _per_layer_allocations(monkeypatch)
    ref = load_engine(str(tiny_model_dir), device="cpu", quantize=method, group_size=group, warm_up=False,
                      calibrate=False).model
    got, want = _buffers(model), _buffers(ref)
    assert got.keys() == want.keys()
    for name, t in got.items():
        assert t.dtype == want[name].dtype and torch.equal(t, want[name]), name
    assert len({m.qweight.untyped_storage().data_ptr() for m in ref.modules() if isinstance(m, type(layers[0]))}) > 1
    with torch.no_grad():
        assert torch.equal(model(IDS), ref(IDS))


def test_the_direct_q4_load_gives_the_same_weights_in_the_shared_allocations(tmp_path, tiny_model_dir, monkeypatch):
    pytest.importorskip("gguf")
    from chatcli.hub.gguf.importer import import_gguf
    from tests.tiny_gguf import write_tiny_gguf

    out = import_gguf(write_tiny_gguf(tmp_path / "q.gguf", tiny_model_dir, qtype="Q4_1", embed_qtype="Q8_0"),
                      tmp_path / "model")
    model = load_engine(str(out), device="cpu", quantize="int4", warm_up=False, calibrate=False).model
    _per_layer_allocations(monkeypatch)
    ref = load_engine(str(out), device="cpu", quantize="int4", warm_up=False, calibrate=False).model
    got, want = _buffers(model), _buffers(ref)
    assert got.keys() == want.keys() and all(torch.equal(t, want[n]) for n, t in got.items())


def test_joined_parts_are_taken_as_they_are_only_when_they_tile_one_tensor():
    rows = torch.arange(24.0).view(6, 4)
    whole = _joined([rows[0:2], rows[2:5], rows[5:6]], 0)
    assert whole.data_ptr() == rows.data_ptr() and torch.equal(whole, rows)
    cols = torch.arange(24.0).view(2, 6, 2)  # the int4 scales' [G, N, 2] layout: members are column blocks
    joined = _joined([cols[:, :4], cols[:, 4:]], 1)
    assert joined.data_ptr() == cols.data_ptr() and torch.equal(joined, cols)
    for parts in ([rows[2:5], rows[0:2]], [rows[0:2], rows[3:5]], [rows[0:2].clone(), rows[2:6]],
                  [rows[0:2, :2], rows[2:4, :2]]):
        copy = _joined(parts, 0)  # out of order, a gap, two tensors, or a strided whole: a copy
        assert torch.equal(copy, torch.cat(parts)) and copy.untyped_storage().data_ptr() != rows.data_ptr()


def _resident_kb(address: int) -> int:
    """Resident kB of this process's mapping that holds ``address`` (from /proc/self/smaps)."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= address < hi
            elif inside and head == "Rss:":
                return int(line.split()[1])
    raise AssertionError("no mapping holds that address")


@pytest.mark.skipif(sys.platform != "linux", reason="madvise and /proc/self/smaps are Linux's")
def test_reading_the_q4_blocks_leaves_none_of_the_gguf_mapped(tmp_path, tiny_model_dir):
    """The pages a read maps around each tensor (the kernel's fault-around: up to 64 kB, the
    neighbours' included) are given back too, so after a load none of the file stays resident."""
    pytest.importorskip("gguf")
    from chatcli.hub.gguf.importer import import_gguf
    from chatcli.hub.gguf.q4_blocks import q4_blocks
    from tests.tiny_gguf import write_tiny_gguf

    out = import_gguf(write_tiny_gguf(tmp_path / "q.gguf", tiny_model_dir, qtype="Q4_1"), tmp_path / "model")
    probe = q4_blocks(out)
    int(probe.data.sum())
    assert _resident_kb(probe.data.ctypes.data) > 0  # reading a mapping makes its pages resident (measurable)
    weights = q4_blocks(out)
    first = weights[next(iter(weights))].q.clone()
    for name in weights:
        weights[name]
    assert _resident_kb(weights.data.ctypes.data) == 0
    assert torch.equal(weights[next(iter(weights))].q, first)  # read again from the file: the same values
