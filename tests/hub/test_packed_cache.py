"""The packed-layout cache: a second load maps the first load's packed tensors (same logits, bit for
bit, nothing copied); a changed checkpoint is never served from it; a damaged file is rebuilt, silently."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import chatcli.model.packed as packed
from chatcli.hub import packed_cache
from chatcli.hub.checkpoint import load_checkpoint
from chatcli.model.packed import FusedGroup, _layer_groups

FAMILIES = ["llama", "llama3", "mistral", "qwen2", "qwen3"]


def _files() -> list[Path]:
    folder = packed_cache._folder()
    return sorted(folder.glob("*.safetensors")) if folder.is_dir() else []


def _logits(model) -> torch.Tensor:
    ids = torch.randint(3, 400, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return model(ids)


def _copies(monkeypatch) -> list[int]:
    """Count the fused groups packing builds by copying (the cache's groups need none)."""
    misses: list[int] = []
    real = packed._laid_out

    def laid_out(mods):
        got = real(mods)
        if got is None:
            misses.append(1)
        return got

    monkeypatch.setattr(packed, "_laid_out", laid_out)
    return misses


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_second_load_maps_the_first_ones_packed_tensors(tiny_family_dirs, family, dtype, monkeypatch):
    first = load_checkpoint(tiny_family_dirs(family), dtype=dtype)
    assert len(_files()) == 1
    copies = _copies(monkeypatch)
    second = load_checkpoint(tiny_family_dirs(family), dtype=dtype)
    assert copies == [] and len(_files()) == 1  # every group adopted as mapped; nothing written again
    assert torch.equal(_logits(first), _logits(second))
    for a, b in zip(_layer_groups(first), _layer_groups(second)):
        assert isinstance(b, FusedGroup) and torch.equal(a.weight_t, b.weight_t) and b.weight_t.is_contiguous()
    assert (second.lm_head.weight is second.model.embed_tokens.weight) == second.config.tie_word_embeddings
    names = dict(first.named_parameters())
    for name, p in second.named_parameters():
        assert p.stride() == names[name].stride() and torch.equal(p, names[name])


def test_a_changed_checkpoint_is_not_served_from_the_old_pack(model_copy):
    old = _logits(load_checkpoint(model_copy))
    weights = model_copy / "model.safetensors"
    tensors = load_file(weights)
    tensors["model.layers.0.mlp.down_proj.weight"] = tensors["model.layers.0.mlp.down_proj.weight"] * 2
    save_file(tensors, weights, metadata={"format": "pt"})
    fresh = _logits(load_checkpoint(model_copy, pack=False))
    new = _logits(load_checkpoint(model_copy))
    assert not torch.equal(new, old)
    assert (new - fresh).abs().max().item() <= 1e-5  # the new weights (unpacked: not bit for bit)
    assert len(_files()) == 2  # a new key; the old pack stays until evicted


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign key", "empty"])
def test_a_damaged_pack_is_rebuilt_without_an_error(tiny_model_dir, damage):
    want = _logits(load_checkpoint(tiny_model_dir))
    (path,) = _files()
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "garbage":
        data = bytearray(path.read_bytes())
        data[8:40] = b"\xff" * 32
        path.write_bytes(bytes(data))
    elif damage == "foreign key":  # a whole, valid file that records another checkpoint's key
        key = path.stem.encode()
        path.write_bytes(path.read_bytes().replace(key, b"1" * len(key), 1))
    else:
        path.write_bytes(b"")
    assert torch.equal(_logits(load_checkpoint(tiny_model_dir)), want)
    assert _files() == [path] and packed_cache.load(path.stem, load_checkpoint(tiny_model_dir).checkpoint_keys(),
                                                    torch.float32) is not None  # written again, whole


def test_size_limits_and_eviction(tiny_family_dirs, monkeypatch):
    monkeypatch.setattr(packed_cache, "MAX_BYTES", 0)
    load_checkpoint(tiny_family_dirs("llama"))
    assert _files() == []  # too large to keep
    monkeypatch.setattr(packed_cache, "MAX_BYTES", 1 << 30)
    load_checkpoint(tiny_family_dirs("llama"))
    (first,) = _files()
    os.utime(first, (1, 1))  # long unused
    monkeypatch.setattr(packed_cache, "MAX_TOTAL", first.stat().st_size * 3 // 2)
    load_checkpoint(tiny_family_dirs("mistral"))
    assert len(_files()) == 1 and _files() != [first]  # the least recently used one made room


def test_quantised_and_unpacked_loads_leave_no_pack(tiny_model_dir):
    from chatcli.model.quantize import quantize_model

    load_checkpoint(tiny_model_dir, pack=False)
    load_checkpoint(tiny_model_dir, transform=lambda m: quantize_model(m, "int8"))
    assert _files() == []


def test_a_cache_folder_that_cannot_be_made_only_costs_the_packing(tiny_model_dir):
    from chatcli.paths import cache_dir

    (cache_dir() / "packed").write_text("a file where the folder would be")
    want = _logits(load_checkpoint(tiny_model_dir))
    assert torch.equal(_logits(load_checkpoint(tiny_model_dir)), want)
