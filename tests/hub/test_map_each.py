"""safetensors_io.map_each: each tensor mapped on its own from one header parse, equal to the library's.

The checkpoint loader maps every tensor separately so packing can free each one as it
replaces it; these check the values against ``safe_open``, that the mappings are distinct and
copy-on-write, and that a file that changed under the reader is refused.
"""

from __future__ import annotations

import mmap

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from chatcli.hub.safetensors_header import HeaderError
from chatcli.hub.safetensors_io import map_each


@pytest.fixture
def weights(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "a.f32": torch.randn(37, 5, generator=g),  # odd sizes: the next tensor starts mid-page
        "b.bf16": torch.randn(3, 1000, generator=g).to(torch.bfloat16),
        "c.f16": torch.randn(2049, generator=g).to(torch.float16),  # crosses page boundaries
        "d.i64": torch.arange(11, dtype=torch.int64),
        "e.empty": torch.zeros(0, 4),
        "f.u8": torch.arange(200, dtype=torch.uint8).view(10, 20),
        "g.big": torch.randn(3 * mmap.ALLOCATIONGRANULARITY // 4 + 3, generator=g),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    return path, tensors


def test_values_dtypes_and_shapes_equal_the_library(weights):
    path, tensors = weights
    keys = list(tensors)
    got = dict(map_each(path, keys))
    with safe_open(str(path), framework="pt") as f:
        for key in keys:
            ref = f.get_tensor(key)
            assert got[key].dtype == ref.dtype and got[key].shape == ref.shape, key
            assert torch.equal(got[key], ref), key


def test_each_tensor_has_its_own_copy_on_write_mapping(weights):
    path, tensors = weights
    got = dict(map_each(path, ["a.f32", "b.bf16", "g.big"]))
    storages = {t.untyped_storage().data_ptr() for t in got.values()}
    assert len(storages) == 3
    before = path.read_bytes()
    got["a.f32"][0, 0] = 123.0  # a write stays in this process: the file is unchanged
    assert got["a.f32"][0, 0] == 123.0 and path.read_bytes() == before


def test_a_subset_in_any_order(weights):
    path, tensors = weights
    got = list(map_each(path, ["g.big", "a.f32"]))
    assert [k for k, _ in got] == ["g.big", "a.f32"]
    assert torch.equal(got[0][1], tensors["g.big"]) and torch.equal(got[1][1], tensors["a.f32"])


def test_a_file_that_no_longer_matches_its_header_is_refused(weights):
    path, _ = weights
    it = map_each(path, ["a.f32"])  # nothing read yet: the generator reads when asked
    with open(path, "ab") as f:
        f.write(b"\0" * 8)
    with pytest.raises(HeaderError):
        next(it)
