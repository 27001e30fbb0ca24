"""The packed weight layout (chatcli.model.packed) gives the unpacked model's logits.

Packed and unpacked float32 models sum in different orders, so they agree to float
rounding (asserted relative to the logit scale); in float64 the packed model matches
transformers to 1e-9, which no layout or fusion mistake could.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from chatcli.lora.manager import AdapterManager
from chatcli.hub.checkpoint import load_checkpoint
from chatcli.model.kv_cache import KVCache
from chatcli.model.lora_linear import LoRALinear
from chatcli.model.packed import fused_linear
from tests.lora_helpers import IDS, peft_model, save_peft
from tests.tiny import FAMILIES, load_hf_oracle

ALL_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _rel_close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> bool:
    # |a - b| within rel of the logit scale (float32 rounding of logits up to ~35).
    return (a - b).abs().max().item() <= rel * b.abs().max().item()


@torch.no_grad()
def _cached(model, ids: torch.Tensor) -> torch.Tensor:
    """Logits [B, S, V] through a KV cache in three chunks (prefill, one token, the rest)."""
    cache = KVCache(model.config, ids.shape[0], model.dtype, model.device, chunk=8)
    return torch.cat([model(ids[:, :7], cache), model(ids[:, 7:8], cache), model(ids[:, 8:], cache)], dim=1)


def _fused_everywhere(model) -> bool:
    x = torch.zeros(1, 1, model.config.hidden_size, dtype=model.dtype)
    with torch.no_grad():
        return all(
            fused_linear(layer.self_attn, layer.self_attn.qkv_group, x) is not None
            and fused_linear(layer.mlp, layer.mlp.gate_up_group, x) is not None
            for layer in model.model.layers
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_matches_unpacked(family, tiny_family_dirs):
    d = tiny_family_dirs(family)
    packed, plain = load_checkpoint(d), load_checkpoint(d, pack=False)
    assert packed.packed and not plain.packed and _fused_everywhere(packed)
    w = packed.model.layers[0].self_attn.q_proj.weight
    assert w.stride() == (1, packed.model.layers[0].self_attn.qkv_group.weight_t.shape[1])  # a view, input-major
    with torch.no_grad():
        assert _rel_close(packed(IDS), plain(IDS))
    assert _rel_close(_cached(packed, IDS), _cached(plain, IDS))
    assert packed.state_dict().keys() == plain.state_dict().keys()
    assert packed.checkpoint_keys() == plain.checkpoint_keys()


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_packed_float64_matches_transformers_exactly(family, tiny_family_dirs):
    """model.to(float64) packs again (the fused path stays on) and matches HF's float64 run."""
    d = tiny_family_dirs(family)
    ours = load_checkpoint(d).to(torch.float64)
    assert _fused_everywhere(ours)
    hf = load_hf_oracle(d).to(torch.float64)
    with torch.no_grad():
        ref = hf(IDS).logits
    assert (_cached(ours, IDS) - ref).abs().max().item() < 1e-9


def test_a_replaced_module_falls_back_to_calling_modules(tiny_model_dir):
    model = load_checkpoint(tiny_model_dir)
    with torch.no_grad():
        before = model(IDS)

    class Opaque(nn.Module):  # e.g. a quantised layer: not a Linear, whatever it holds
        def __init__(self, inner: nn.Linear):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    attn = model.model.layers[0].self_attn
    attn.k_proj = Opaque(attn.k_proj)
    x = torch.zeros(1, 1, model.config.hidden_size)
    assert fused_linear(attn, attn.qkv_group, x) is None
    with torch.no_grad():
        assert torch.allclose(model(IDS), before, atol=1e-5)


def test_unmerged_lora_keeps_the_fused_matmul_and_matches_unpacked(tiny_model_dir, tmp_path):
    adapter = save_peft(peft_model(tiny_model_dir, target_modules=ALL_LINEARS, r=4, lora_alpha=8), tmp_path / "a")
    packed, plain = load_checkpoint(tiny_model_dir), load_checkpoint(tiny_model_dir, pack=False)
    with torch.no_grad():
        base = packed(IDS)
    managers = [AdapterManager(m) for m in (packed, plain)]
    for manager in managers:
        manager.load(adapter, name="a")
    assert isinstance(packed.model.layers[0].self_attn.q_proj, LoRALinear)
    assert _fused_everywhere(packed)  # the base matmul stays fused under the wrappers
    with torch.no_grad():
        on = packed(IDS)
        assert _rel_close(on, plain(IDS))
        assert not _rel_close(on, base, rel=1e-2)  # the adapter does change the logits
    managers[0].unload("a")
    with torch.no_grad():
        assert torch.equal(packed(IDS), base)  # an unmerged adapter leaves W0 bit-exact


def test_merge_writes_the_packed_storage_and_survives_save_and_reload(tiny_model_dir, tmp_path):
    adapter = save_peft(peft_model(tiny_model_dir, target_modules=ALL_LINEARS, r=4, lora_alpha=8), tmp_path / "a")
    packed, plain = load_checkpoint(tiny_model_dir), load_checkpoint(tiny_model_dir, pack=False)
    managers = [AdapterManager(m) for m in (packed, plain)]
    for manager in managers:
        manager.load(adapter, name="a")
        manager.merge("a")
    assert not isinstance(packed.model.layers[0].self_attn.q_proj, LoRALinear)  # merged: plain Linear again
    assert _fused_everywhere(packed)
    with torch.no_grad():
        merged = packed(IDS)
        assert _rel_close(merged, plain(IDS))
    # Save the packed model's weights (views made contiguous, as `lora merge` does) and load them back.
    out = tmp_path / "merged"
    shutil.copytree(tiny_model_dir, out)
    state = {k: v.detach().contiguous() for k, v in packed.state_dict().items() if k in packed.checkpoint_keys()}
    save_file(state, str(out / "model.safetensors"))
    reloaded = load_checkpoint(out)
    with torch.no_grad():
        assert torch.equal(reloaded(IDS), merged)
    managers[0].unmerge("a")
    managers[0].unload("a")
    with torch.no_grad():
        assert _rel_close(packed(IDS), load_checkpoint(tiny_model_dir)(IDS))  # W0 back within rounding


def test_lora_training_gradients_match_unpacked(tiny_model_dir, tmp_path):
    adapter = save_peft(peft_model(tiny_model_dir, target_modules=["q_proj", "v_proj", "up_proj"]), tmp_path / "a")
    grads = []
    for pack in (True, False):
        model = load_checkpoint(tiny_model_dir, pack=pack).train()
        model.requires_grad_(False)
        model.set_gradient_checkpointing(True)
        AdapterManager(model).load(adapter, name="a")
        pair = model.model.layers[1].self_attn.v_proj.lora["a"]
        pair.A.requires_grad_(True)
        pair.B.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(IDS[:, :-1]).flatten(0, 1), IDS[:, 1:].flatten())
        loss.backward()
        grads.append((pair.A.grad.clone(), pair.B.grad.clone()))
    for packed_g, plain_g in zip(*grads):
        assert packed_g.abs().sum() > 0
        assert torch.allclose(packed_g, plain_g, rtol=1e-4, atol=1e-6)


def test_bf16_decode_path_follows_merges(tiny_model_dir, tmp_path):
    """bf16 small-row products use the oneDNN copy; a merge (written into the packed storage)
    must reach it, so a bf16 decode step after merging gives the merged model's logits."""
    from chatcli.model import packed as packed_module

    if not packed_module._HAS_ONEDNN:
        pytest.skip("torch built without oneDNN")
    adapter = save_peft(peft_model(tiny_model_dir, target_modules=ALL_LINEARS, r=4, lora_alpha=8), tmp_path / "a")
    packed = load_checkpoint(tiny_model_dir, dtype=torch.bfloat16)
    plain = load_checkpoint(tiny_model_dir, dtype=torch.bfloat16, pack=False)
    one = IDS[:1, :1]  # one row: the oneDNN path
    with torch.no_grad():
        assert (packed(one) - plain(one)).abs().max().item() <= 0.02 * plain(one).abs().max().item()
        for m in (packed, plain):
            manager = AdapterManager(m)
            manager.load(adapter, name="a")
            manager.merge("a")
        merged = plain(one)
        assert (packed(one) - merged).abs().max().item() <= 0.02 * merged.abs().max().item()
        assert (load_checkpoint(tiny_model_dir, dtype=torch.bfloat16)(one) - merged).abs().max().item() > 0.1


def test_bf16_short_rows_still_train(tiny_model_dir, tmp_path):
    """A few rows with gradients flowing (LoRA training on a bf16 base) take the aten path:
    the oneDNN op has no autograd, so layer 1's base matmuls would drop their gradient."""
    adapter = save_peft(peft_model(tiny_model_dir, target_modules=["q_proj", "v_proj"]), tmp_path / "a")
    grads = []
    for pack in (True, False):
        model = load_checkpoint(tiny_model_dir, dtype=torch.bfloat16, pack=pack).train()
        model.requires_grad_(False)
        AdapterManager(model).load(adapter, name="a")
        pair = model.model.layers[0].self_attn.q_proj.lora["a"]
        pair.A.requires_grad_(True)
        model(IDS[:1, :4]).float().sum().backward()  # 4 rows: within the oneDNN row limit
        grads.append(pair.A.grad.float())
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], rtol=0.05, atol=0.05 * grads[1].abs().max().item())
