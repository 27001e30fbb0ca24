"""KVCache: chunked growth, the context cap, truncate (prefix reuse), expand/select (candidates)."""

from __future__ import annotations

import pytest
import torch

from chatcli.hub.checkpoint import load_checkpoint
from chatcli.model.kv_cache import KVCache
from chatcli.errors import GenerationError

TOL = 1e-4


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_checkpoint(tiny_model_dir)


def _ids(shape, seed=0) -> torch.Tensor:
    return torch.randint(3, 400, shape, generator=torch.Generator().manual_seed(seed))


def test_storage_grows_in_chunks_not_to_the_context(model):
    cfg = model.config
    cache = KVCache(cfg, 1, torch.float32, "cpu", chunk=16)
    assert cache.capacity == 0 and cache.nbytes == 0
    with torch.no_grad():
        model(_ids((1, 5)), cache)
        assert (cache.length, cache.capacity) == (5, 16)
        assert cache.keys[0].shape == (1, cfg.num_key_value_heads, 16, cfg.head_dim)
        model(_ids((1, 11), seed=1), cache)
        assert (cache.length, cache.capacity) == (16, 16)  # exactly full: no growth
        model(_ids((1, 1), seed=2), cache)
        assert (cache.length, cache.capacity) == (17, 32)
    assert cache.capacity < cfg.context_length
    # 2 (k, v) x layers x kv heads x head_dim x 4 bytes per position
    assert cache.bytes_per_token == 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 4
    assert cache.nbytes == 32 * cache.bytes_per_token


@torch.no_grad()
def test_growth_keeps_the_filled_positions(model):
    ids = _ids((1, 40), seed=3)
    full = model(ids)
    cache = KVCache(model.config, 1, torch.float32, "cpu", chunk=4)  # many reallocations
    out = torch.cat([model(ids[:, i : i + 3], cache) for i in range(0, 40, 3)], dim=1)
    assert cache.capacity == 40
    assert (out - full).abs().max().item() <= TOL


def test_capacity_is_capped_at_the_context_and_overflow_is_refused(model):
    ctx = model.config.context_length  # 256 for the tiny model
    cache = KVCache(model.config, 1, torch.float32, "cpu", chunk=100)
    cache.ensure(250)
    assert cache.capacity == ctx  # the 300 a third chunk would give is capped
    with pytest.raises(GenerationError, match="exceed the model's context of 256"):
        cache.ensure(ctx + 1)


@torch.no_grad()
def test_failed_forward_leaves_length_unchanged(model):
    cache = KVCache(model.config, 1, torch.float32, "cpu", chunk=16)
    model(_ids((1, 6)), cache)
    with pytest.raises(GenerationError):
        model(_ids((1, 300)), cache)
    assert cache.length == 6


@torch.no_grad()
def test_truncate_reuses_a_prefix_for_a_new_continuation(model):
    prefix, old_tail, new_tail = _ids((1, 12), 4), _ids((1, 6), 5), _ids((1, 5), 6)
    cache = KVCache(model.config, 1, torch.float32, "cpu", chunk=16)
    model(torch.cat([prefix, old_tail], dim=1), cache)
    cache.truncate(12)
    assert cache.length == 12
    got = model(new_tail, cache)
    want = model(torch.cat([prefix, new_tail], dim=1))[:, 12:]
    assert (got - want).abs().max().item() <= TOL
    with pytest.raises(ValueError):
        cache.truncate(cache.length + 1)


@torch.no_grad()
def test_expand_gives_independent_rows_after_one_prefill(model):
    prompt = _ids((1, 10), 7)
    cache = KVCache(model.config, 1, torch.float32, "cpu", chunk=16)
    model(prompt, cache)
    batch = cache.expand(3)
    assert (batch.batch_size, batch.length, cache.batch_size) == (3, 10, 1)
    nxt = _ids((3, 2), 8)
    got = model(nxt, batch)  # [3, 2, V]
    for i in range(3):
        want = model(torch.cat([prompt, nxt[i : i + 1]], dim=1))[:, 10:]
        assert (got[i : i + 1] - want).abs().max().item() <= TOL
    # The batch-1 cache was left as it was: it still continues the prompt.
    assert cache.length == 10
    again = model(nxt[1:2], cache)
    assert (again - got[1:2]).abs().max().item() <= TOL

    # select() brings one candidate back as a batch-1 cache that continues that row.
    kept = batch.select(2)
    assert (kept.batch_size, kept.length) == (1, 12)
    tail = _ids((1, 1), 9)
    want = model(torch.cat([prompt, nxt[2:3], tail], dim=1))[:, -1:]
    assert (model(tail, kept) - want).abs().max().item() <= TOL


def test_expand_and_select_reject_bad_shapes(model):
    cache = KVCache(model.config, 2, torch.float32, "cpu")
    with pytest.raises(ValueError, match="batch-1"):
        cache.expand(3)
    with pytest.raises(IndexError):
        cache.select(2)


@torch.no_grad()
def test_cache_rows_must_match_the_batch(model):
    cache = KVCache(model.config, 2, torch.float32, "cpu")
    with pytest.raises(ValueError, match="2 rows"):
        model(_ids((1, 3)), cache)


def test_cache_filled_under_inference_mode_continues_under_no_grad(model):
    ids = _ids((1, 12), seed=11)
    cache = KVCache(model.config, 1, torch.float32, "cpu", chunk=8)
    with torch.inference_mode():
        model(ids[:, :9], cache)  # storage grows here
        batch = cache.expand(2)
    with torch.no_grad():
        got = model(ids[:, 9:], cache)
        model(ids[:, 9:].expand(2, -1), batch)
        want = model(ids)[:, 9:]
    assert (got - want).abs().max().item() <= TOL
