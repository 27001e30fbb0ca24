"""LoRALinear and ReplacedModule on their own: the docstring maths, caching, training path."""

from __future__ import annotations

import torch
from torch import nn

from chatcli.model.lora_linear import LoRALinear, LoRAPair, Replacement, ReplacedModule, lora_scaling


def _layer(seed=0, bias=True):
    torch.manual_seed(seed)
    base = nn.Linear(12, 7, bias=bias)
    return base, LoRALinear(base)


def _pair(r, alpha, seed, rslora=False, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return LoRAPair(torch.randn(r, 12, generator=g), torch.randn(7, r, generator=g), alpha, rslora=rslora, scale=scale)


def test_formula_with_stacked_scaled_adapters():
    base, lin = _layer()
    p1, p2, p3 = _pair(4, 8, 1), _pair(2, 3, 2, rslora=True, scale=-0.5), _pair(3, 6, 3)
    lin.add("a", p1)
    lin.add("b", p2)
    lin.add("c", p3)
    p3.enabled = False
    lin.invalidate()
    x = torch.randn(2, 5, 12)
    want = base(x) + (x @ p1.A.T @ p1.B.T) * (8 / 4) + (x @ p2.A.T @ p2.B.T) * (-0.5 * 3 / 2**0.5)
    with torch.no_grad():
        assert torch.allclose(lin(x), want, atol=1e-5)
    assert lora_scaling(4, 8) == 2.0 and lora_scaling(4, 8, rslora=True) == 4.0


def test_in_place_updates_are_seen_and_unwrap_returns_the_original():
    base, lin = _layer()
    p = _pair(4, 8, 1)
    lin.add("a", p)
    x = torch.randn(3, 12)
    with torch.no_grad():
        y1 = lin(x)
        p.A.mul_(2.0)  # an optimizer step writes in place
        y2 = lin(x)
    assert torch.allclose(y2 - base(x), 2 * (y1 - base(x)), atol=1e-5)
    assert set(lin.state_dict()) == {"lora_A__a", "lora_B__a", "base.weight", "base.bias"}
    lin.remove("a")
    assert lin.base is base and not lin.lora and list(lin.state_dict()) == ["base.weight", "base.bias"]
    with torch.no_grad():
        assert torch.equal(lin(x), base(x))


def test_training_path_has_gradients_and_same_values():
    base, lin = _layer()
    p = _pair(4, 8, 1)
    lin.add("a", p)
    x = torch.randn(3, 12)
    with torch.no_grad():
        fused = lin(x)
    p.A.requires_grad_(True)
    p.B.requires_grad_(True)
    y = lin(x)
    assert torch.allclose(y, fused, atol=1e-5)
    y.sum().backward()
    assert p.A.grad is not None and p.B.grad is not None and base.weight.grad is not None


def test_dtype_change_rebuilds_the_fused_pair():
    base, lin = _layer()
    lin.add("a", _pair(4, 8, 1))
    x = torch.randn(3, 12)
    with torch.no_grad():
        y32 = lin(x)
        lin.to(torch.float64)
        y64 = lin(x.double())
    assert y64.dtype == torch.float64 and torch.allclose(y64.float(), y32, atol=1e-5)


def test_merge_then_unmerge_restores_within_rounding():
    base, lin = _layer()
    w0 = base.weight.detach().clone()
    lin.add("a", _pair(4, 8, 1, scale=0.7))
    x = torch.randn(3, 12)
    with torch.no_grad():
        side = lin(x)
        lin.merge("a")
        assert torch.allclose(lin(x), side, atol=1e-5)
        lin.unmerge("a")
    assert torch.allclose(base.weight, w0, atol=1e-6) and not lin.lora["a"].merged


def test_replaced_module_interpolates():
    emb = nn.Embedding(10, 4)
    rep = ReplacedModule(emb)
    new = torch.randn(10, 4)
    rep.add("a", Replacement(new))
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(rep(ids), new[ids])
        rep.replacements["a"].scale = 0.25
        assert torch.allclose(rep(ids), emb(ids) + 0.25 * (new[ids] - emb(ids)))
        rep.replacements["a"].scale = 0.0
        assert torch.equal(rep(ids), emb(ids))
        rep.replacements["a"].scale = 1.0
        second = torch.randn(10, 4)
        rep.add("b", Replacement(second))  # the last active one wins
        assert torch.equal(rep(ids), second[ids])
        rep.replacements["b"].enabled = False
        assert torch.equal(rep(ids), new[ids])
    assert rep.weight is emb.weight


def test_a_model_with_a_replaced_head_still_moves_between_dtypes(tiny_model_dir):
    """nn.Module.to() goes through Module._apply: the replacement wrapper must not shadow it."""
    from chatcli.lora.manager import AdapterManager
    from chatcli.hub.checkpoint import load_checkpoint
    from chatcli.lora.peft_io import LoRAAdapter

    model = load_checkpoint(tiny_model_dir)
    head = model.lm_head.weight.detach() + 0.1
    AdapterManager(model).add(LoRAAdapter(modules={}, saved={"lm_head": {"weight": head}}), "head")
    model.to(torch.bfloat16)
    assert model.lm_head.base.weight.dtype == torch.bfloat16
