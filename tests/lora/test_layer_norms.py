"""‖ΔW‖_F / ‖W0‖_F per module, checked against PEFT's own delta weights on tiny models."""

from __future__ import annotations

import math

import pytest
import torch

from chatcli.hub.checkpoint import load_checkpoint
from chatcli.lora.layer_norms import layer_norms, product_norm
from chatcli.lora.manager import AdapterManager
from chatcli.model.int8 import Int8Linear, quantize_int8
from chatcli.model.quantize import quantize_model
from tests.lora_helpers import peft_model, save_peft

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@torch.no_grad()
def _peft_ratios(pm, scale: float = 1.0, base=None) -> dict[str, float]:
    """module name -> ‖scale · PEFT's delta weight‖ / ‖W0‖, straight from PEFT's layers (W0: ``base(name)`` if given)."""
    out = {}
    for name, mod in pm.named_modules():
        if hasattr(mod, "get_delta_weight") and "default" in getattr(mod, "lora_A", {}):
            key = name.removeprefix("base_model.model.")
            w0 = mod.base_layer.weight if base is None else base(key)
            out[key] = float(torch.linalg.norm(scale * mod.get_delta_weight("default").double()) / torch.linalg.norm(w0.double()))
    return out


def _ours(norms) -> dict[str, float]:
    return {c.module: c.ratio for c in norms.cells}


@pytest.fixture
def peft_dir(tmp_path, tiny_family_dirs):
    def make(family="llama", **kw):
        model_dir = tiny_family_dirs(family)
        kw.setdefault("target_modules", TARGETS)
        pm = peft_model(model_dir, r=4, lora_alpha=8, **kw)
        return model_dir, pm, save_peft(pm, tmp_path / f"{family}-{len(kw)}-{kw.get('use_rslora', False)}")

    return make


def test_product_norm_is_the_norm_of_the_product():
    gen = torch.Generator().manual_seed(0)
    A, B = torch.randn(3, 40, generator=gen), torch.randn(24, 3, generator=gen)
    assert product_norm(A, B) == pytest.approx(float(torch.linalg.norm(B.double() @ A.double())), rel=1e-10)
    assert product_norm(A, torch.zeros(24, 3)) == 0.0


@pytest.mark.parametrize("pack", [True, False], ids=["packed", "unpacked"])
@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_ratio_matches_peft(peft_dir, family, pack):
    model_dir, pm, saved = peft_dir(family)
    model = load_checkpoint(model_dir, pack=pack)
    mgr = AdapterManager(model)
    mgr.load(saved, name="a")
    norms = layer_norms(mgr, "a")
    expected = _peft_ratios(pm)
    assert set(_ours(norms)) == set(expected) and len(expected) == 7 * model.config.num_hidden_layers
    for module, ratio in _ours(norms).items():
        assert ratio == pytest.approx(expected[module], rel=1e-5), module
    assert norms.layers == list(range(model.config.num_hidden_layers)) and norms.targets == tuple(TARGETS)
    top = norms.largest()
    assert top.module == max(expected, key=expected.get) and norms.cell(top.layer, top.target) is top
    # a layer's figure combines its modules' squares
    layer0 = [c for c in norms.cells if c.layer == 0]
    assert norms.layer_ratio(0) == pytest.approx(
        math.sqrt(sum(c.delta_norm**2 for c in layer0)) / math.sqrt(sum(c.base_norm**2 for c in layer0)))


def test_rslora_and_the_live_scale(peft_dir):
    model_dir, pm, saved = peft_dir(use_rslora=True)
    mgr = AdapterManager(load_checkpoint(model_dir))
    mgr.load(saved, name="a", scale=0.5)
    norms = layer_norms(mgr, "a")
    assert norms.rslora and norms.scaling == pytest.approx(8 / 2)  # 8 / sqrt(4)
    expected = _peft_ratios(pm, scale=0.5)
    for module, ratio in _ours(norms).items():
        assert ratio == pytest.approx(expected[module], rel=1e-5), module
    mgr.set_scale("a", -1.0)  # the sign does not change the size
    doubled = _ours(layer_norms(mgr, "a"))
    assert all(doubled[m] == pytest.approx(2 * r, rel=1e-9) for m, r in _ours(norms).items())
    mgr.disable("a")  # what it adds when on, and says it is off
    off = layer_norms(mgr, "a")
    assert not off.enabled and _ours(off) == doubled


def test_merged_adapters_measure_against_the_weight_without_them(peft_dir):
    model_dir, pm, saved = peft_dir()
    model = load_checkpoint(model_dir)
    mgr = AdapterManager(model)
    mgr.load(saved, name="a")
    mgr.load(saved, name="b", scale=2.0)
    before = {n: _ours(layer_norms(mgr, n)) for n in ("a", "b")}
    q = model.model.layers[0].self_attn.q_proj
    w = q.weight.detach().clone()
    mgr.merge("a")
    mgr.merge("b")  # W now holds W0 + ΔWa + ΔWb
    assert not torch.allclose(q.weight, w)
    for n in ("a", "b"):
        norms = layer_norms(mgr, n)
        assert norms.merged
        for module, ratio in _ours(norms).items():
            assert ratio == pytest.approx(before[n][module], rel=1e-4), module
    assert torch.allclose(mgr.base_weight("model.layers.0.self_attn.q_proj"), w, atol=1e-5)
    fresh = AdapterManager(load_checkpoint(model_dir))  # merged before any norm was taken
    fresh.load(saved, name="a")
    fresh.merge("a")
    for module, ratio in _ours(layer_norms(fresh, "a")).items():
        assert ratio == pytest.approx(before["a"][module], rel=1e-4), module
    assert _peft_ratios(pm)["model.layers.0.self_attn.q_proj"] == pytest.approx(before["a"]["model.layers.0.self_attn.q_proj"], rel=1e-5)


@pytest.mark.parametrize("pack", [True, False], ids=["packed", "unpacked"])
def test_int8_base_uses_the_dequantised_weight(peft_dir, pack):
    model_dir, pm, saved = peft_dir()
    model = load_checkpoint(model_dir, pack=pack)
    assert quantize_model(model, "int8") > 0
    mgr = AdapterManager(model)
    mgr.load(saved, name="a")

    def dequantised(module: str) -> torch.Tensor:
        q, s = quantize_int8(pm.get_submodule(f"base_model.model.{module}").base_layer.weight)
        return q.double() * s.double()[:, None]

    expected = _peft_ratios(pm, base=dequantised)
    assert isinstance(model.model.layers[0].self_attn.q_proj.base, Int8Linear)  # LoRA on an int8 layer
    for module, ratio in _ours(layer_norms(mgr, "a")).items():
        assert ratio == pytest.approx(expected[module], rel=1e-5), module
