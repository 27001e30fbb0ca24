"""The packed cache of quantised models: a second int4/int8 load maps the first one's built buffers instead
of quantising again, and gives the same model bit for bit (every buffer, every fused group, the logits of
a few steps); a changed checkpoint, method or group size is a new entry; a damaged file is rebuilt, silently."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import chatcli.model.quantize as quantize
from chatcli.engine.loader import load_engine
from chatcli.hub import packed_cache
from chatcli.hub.checkpoint import load_checkpoint
from chatcli.model.int4 import Int4Linear
from chatcli.model.int8 import Int8Linear
from chatcli.model.packed import _layer_groups
from chatcli.model.quant_snapshot import describe

FAMILIES = ["llama", "llama3", "mistral", "qwen2", "qwen3"]


def _files() -> list[Path]:
    folder = packed_cache._folder()
    return sorted(folder.glob("*.safetensors")) if folder.is_dir() else []


def _load(path: Path, method: str = "int4", group: int | None = None, dtype=torch.float32):
    """A quantised model as the loader builds it, through the cache of built models."""
    return load_checkpoint(path, dtype=dtype, transform=lambda m: quantize.quantize_model(m, method, group_size=group),
                           built=f"{method}/g{group}")


def _quantisations(monkeypatch) -> list[int]:
    """Count the quantize_model calls (a load served from the cache makes none)."""
    calls: list[int] = []
    real = quantize.quantize_model

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(quantize, "quantize_model", counting)
    return calls


def _assert_identical(a, b) -> None:
    """Every tensor of the state and of the fused groups equal (values, dtype, strides), and 3 greedy steps' logits."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and sa[k].stride() == sb[k].stride() and torch.equal(sa[k], sb[k]), k
    assert [type(m) for m in a.modules()] == [type(m) for m in b.modules()]
    for ga, gb in zip(_layer_groups(a), _layer_groups(b), strict=True):
        assert type(ga) is type(gb)
        if hasattr(ga, "fused"):  # a quantised group: its fused layer's buffers
            assert (ga.sizes, ga.starts) == (gb.sizes, gb.starts)
            for (na, ta), (nb, tb) in zip(ga.fused.state_dict().items(), gb.fused.state_dict().items(), strict=True):
                assert na == nb and torch.equal(ta, tb) and ta.is_contiguous() == tb.is_contiguous()
    for ma, mb in zip(a.modules(), b.modules()):
        if isinstance(ma, (Int4Linear, Int8Linear)):
            assert ma.compute_dtype == mb.compute_dtype and ma.kernel_ok == mb.kernel_ok
            assert getattr(ma, "exact_top", 0) == getattr(mb, "exact_top", 0)
    ids = torch.randint(3, 400, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for _ in range(3):
            la, lb = a(ids), b(ids)
            assert torch.equal(la, lb)
            ids = torch.cat([ids, la[:, -1:].argmax(-1)], dim=1)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["int4", "int8"])
def test_second_load_maps_the_built_model_bit_for_bit(tiny_family_dirs, family, method, monkeypatch):
    calls = _quantisations(monkeypatch)
    first = _load(tiny_family_dirs(family), method)
    assert len(calls) == 1 and len(_files()) == 1
    second = _load(tiny_family_dirs(family), method)
    assert len(calls) == 1 and len(_files()) == 1  # nothing quantised, nothing written again
    _assert_identical(first, second)
    # The quantised buffers are views of the mapped file's two blobs, at the original's places.
    q = [m.qweight for m in second.modules() if isinstance(m, (Int4Linear, Int8Linear))]
    assert len({t.untyped_storage().data_ptr() for t in q}) == 1 and all(t.data_ptr() % 64 == 0 for t in q)
    fused = [g.fused.qweight for g in _layer_groups(second) if hasattr(g, "fused")]
    assert fused and all(t.untyped_storage().data_ptr() == q[0].untyped_storage().data_ptr() for t in fused)


@pytest.mark.parametrize("group", [64, 128])
def test_other_group_sizes_and_bfloat16(tiny_model_dir, group):
    for dtype in (torch.float32, torch.bfloat16):
        first = _load(tiny_model_dir, "int4", group, dtype)
        _assert_identical(first, _load(tiny_model_dir, "int4", group, dtype))
    assert len(_files()) == 2  # one entry per dtype


def test_method_group_and_checkpoint_each_have_their_own_entry(tiny_model_dir, tmp_path, monkeypatch):
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    _load(model, "int4")
    _load(model, "int4", 64)
    _load(model, "int8")
    assert len(_files()) == 3
    old = _load(model, "int4")
    weights = model / "model.safetensors"
    tensors = load_file(weights)
    tensors["model.layers.0.mlp.down_proj.weight"] = tensors["model.layers.0.mlp.down_proj.weight"] * 2
    save_file(tensors, weights, metadata={"format": "pt"})
    calls = _quantisations(monkeypatch)
    new = _load(model, "int4")
    assert calls == [1] and len(_files()) == 4  # a stale entry is never served: the new checkpoint quantised
    down = [m.model.layers[0].mlp.down_proj.scales_zeros for m in (new, old)]
    assert not torch.equal(*down)
    _assert_identical(new, _load(model, "int4"))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign key", "empty", "float pack", "wrong layout"])
def test_a_damaged_entry_is_rebuilt_without_an_error(tiny_model_dir, damage, monkeypatch):
    want = _load(tiny_model_dir)
    (path,) = _files()
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[:-100])
    elif damage == "garbage":
        path.write_bytes(data[:8] + b"\xff" * 32 + data[40:])
    elif damage == "foreign key":  # a whole, valid file that records another model's key
        path.write_bytes(data.replace(path.stem.encode(), b"1" * len(path.stem), 1))
    elif damage == "float pack":  # the float model's pack under this name
        load_checkpoint(tiny_model_dir)
        (float_pack,) = [f for f in _files() if f != path]
        shutil.move(float_pack, path)
    else:  # "wrong layout": a valid file whose layout names a module the model lacks
        path.write_bytes(data.replace(b'"lm_head"', b'"lm_hexx"', 1) if b'"lm_head"' in data
                         else data.replace(b"lm_head.", b"lm_hexx.", 1))
    calls = _quantisations(monkeypatch)
    _assert_identical(want, _load(tiny_model_dir))
    assert calls == [1] and _files() == [path]  # quantised again and written again, whole
    _assert_identical(want, _load(tiny_model_dir))
    assert calls == [1]


def test_the_loader_keys_by_method_and_group_and_counts_the_float_parameters(tiny_model_dir, monkeypatch):
    first = load_engine(str(tiny_model_dir), quantize="int4", warm_up=False, calibrate=False)
    calls = _quantisations(monkeypatch)
    second = load_engine(str(tiny_model_dir), quantize="int4", warm_up=False, calibrate=False)
    assert calls == [] and second.identity == first.identity  # the parameter count included
    _assert_identical(first.model, second.model)
    load_engine(str(tiny_model_dir), quantize="int4", group_size=64, warm_up=False, calibrate=False)
    load_engine(str(tiny_model_dir), quantize="int8", warm_up=False, calibrate=False)
    assert len(calls) == 2 and len(_files()) == 3


def test_a_kept_gguf_beside_the_weights_is_part_of_the_key(tiny_model_dir, tmp_path):
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    load_engine(str(model), quantize="int4", warm_up=False, calibrate=False)
    (model / "source.gguf").write_bytes(b"GGUF")
    load_engine(str(model), quantize="int4", warm_up=False, calibrate=False)
    assert len(_files()) == 2


def test_only_quantised_models_are_described(tiny_model_dir):
    float_model = load_checkpoint(tiny_model_dir)
    assert describe(float_model) is None  # nothing quantised: the float pack's business
    model = _load(tiny_model_dir)
    blobs, layout = describe(model)
    assert set(layout["modules"]) >= {"lm_head", "model.embed_tokens", "model.layers.0.self_attn.q_proj"}
    float_bytes = sum(t.numel() * t.element_size() for t in float_model.state_dict().values())
    assert 0 < sum(b.numel() for b in blobs.values()) < float_bytes
