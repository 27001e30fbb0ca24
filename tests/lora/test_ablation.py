"""Per-layer ablation: each layer's KL checked against a model whose adapter lacks that layer."""

from __future__ import annotations

import math

import pytest
import torch

from chatcli.errors import UsageError
from chatcli.hub.checkpoint import load_checkpoint
from chatcli.lora.ablation import layer_ablation, layer_groups
from chatcli.lora.compare import compare_answer
from chatcli.lora.manager import AdapterManager
from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA

PROMPT = [1, 5, 77, 300, 12, 9]
ANSWER = [240, 33, 18, 61, 150, 2]


def _modules(model, seed: int, names=("q_proj", "v_proj", "down_proj")) -> dict[str, ModuleLoRA]:
    gen = torch.Generator().manual_seed(seed)
    mods = {}
    for n, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in names:
            mods[n] = ModuleLoRA(0.3 * torch.randn(4, m.in_features, generator=gen), 0.3 * torch.randn(m.out_features, 4, generator=gen), 8.0)
    return mods


def _probs(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(model(torch.tensor([ids]))[0].double(), -1)[len(PROMPT) - 1 : -1]


def _kl_bits(p, q) -> torch.Tensor:
    return (p * (p.log() - q.log())).sum(-1) / math.log(2)


@pytest.mark.parametrize("pack", [True, False], ids=["packed", "unpacked"])
def test_each_layer_matches_a_model_without_that_layer(tiny_model_dir, pack):
    model = load_checkpoint(tiny_model_dir, pack=pack)
    mods = _modules(model, 1)
    mgr = AdapterManager(model)
    mgr.add(LoRAAdapter(modules=dict(mods)), "a", scale=0.7)
    result = layer_ablation(model, mgr, PROMPT, ANSWER)
    on = _probs(model, PROMPT + ANSWER)
    assert [e.layer for e in result.layers] == [0, 1] and result.tokens == len(ANSWER) and result.adapters == ("a×0.7",)
    for e in result.layers:
        other = load_checkpoint(tiny_model_dir, pack=pack)  # the adapter without this layer's modules
        keep = {n: ModuleLoRA(m.A.clone(), m.B.clone(), m.alpha) for n, m in mods.items() if f"layers.{e.layer}." not in n}
        AdapterManager(other).add(LoRAAdapter(modules=keep), "a", scale=0.7)
        off = _probs(other, PROMPT + ANSWER)
        kl = _kl_bits(on, off)
        assert e.kl_bits == pytest.approx(float(kl.mean()), abs=1e-4)
        assert e.max_kl_bits == pytest.approx(float(kl.max()), abs=1e-4)
        assert e.changed == int((on.argmax(-1) != off.argmax(-1)).sum())
        assert len(e.modules) == 3 and all(f"layers.{e.layer}." in m for m in e.modules)
        assert e.kl_bits > 1e-3
    total = compare_answer(model, mgr, PROMPT, ANSWER)
    assert result.total_kl_bits == pytest.approx(total.mean_kl_bits, abs=1e-5)
    assert result.total_changed == total.to_json()["choices_changed"]
    ranked = result.ranked()
    assert [e.kl_bits for e in ranked] == sorted((e.kl_bits for e in ranked), reverse=True)
    summary = result.to_json()
    assert summary["type"] == "layer_ablation" and [x["layer"] for x in summary["layers"]] == [e.layer for e in ranked]


def test_every_switch_comes_back_even_after_an_error(tiny_model_dir):
    model = load_checkpoint(tiny_model_dir)
    mgr = AdapterManager(model)
    mgr.add(LoRAAdapter(modules=_modules(model, 1)), "a", scale=0.5)
    mgr.add(LoRAAdapter(modules=_modules(model, 2, names=("o_proj", "up_proj"))), "b")
    mgr.merge("b")
    mgr.add(LoRAAdapter(modules=_modules(model, 3, names=("k_proj",))), "c")
    mgr.disable("c")
    ids = torch.tensor([PROMPT + ANSWER])
    with torch.no_grad():
        before = model(ids)
    state = mgr.list()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    version = mgr.weights_version()

    result = layer_ablation(model, mgr, PROMPT, ANSWER, names=["a", "b"], scales={"a": 1.0}, off=["c"])
    assert result.adapters == ("a", "b")
    for e in result.layers:
        assert sum("o_proj" in m or "up_proj" in m for m in e.modules) == 2  # b's merged modules are ablated too
    calls = []

    def fail(done, total):
        calls.append((done, total))
        if done == 3:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        layer_ablation(model, mgr, PROMPT, ANSWER, names=["a", "b"], progress=fail)
    assert calls == [(1, 4), (2, 4), (3, 4)]  # all on, layer 0, layer 1 (then the total)
    with torch.no_grad():
        assert torch.equal(model(ids), before)
    assert mgr.list() == state and mgr.weights_version() > version
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())


def test_a_merged_adapter_ablates_like_an_unmerged_one(tiny_model_dir):
    model = load_checkpoint(tiny_model_dir)
    mgr = AdapterManager(model)
    mgr.add(LoRAAdapter(modules=_modules(model, 1)), "a")
    plain = layer_ablation(model, mgr, PROMPT, ANSWER)
    mgr.merge("a")
    merged = layer_ablation(model, mgr, PROMPT, ANSWER)
    for x, y in zip(plain.layers, merged.layers):
        assert y.kl_bits == pytest.approx(x.kl_bits, abs=1e-4)
    assert merged.total_kl_bits == pytest.approx(plain.total_kl_bits, abs=1e-4)


def test_groups_stop_and_refusals(tiny_model_dir):
    import threading

    model = load_checkpoint(tiny_model_dir)
    mgr = AdapterManager(model)
    mods = _modules(model, 1, names=("q_proj",))
    mods["lm_head"] = ModuleLoRA(0.1 * torch.randn(4, 64), 0.1 * torch.randn(model.config.vocab_size, 4), 8.0)
    mgr.add(LoRAAdapter(modules=mods), "a")
    groups = layer_groups(mgr, ["a"])
    assert [g[0] for g in groups] == [0, 1, None] and groups[-1][1] == ("lm_head",)
    result = layer_ablation(model, mgr, PROMPT, ANSWER)
    assert [e.label for e in result.layers] == ["0", "1", "lm_head"]
    stop = threading.Event()
    stop.set()
    with pytest.raises(UsageError, match="stopped"):
        layer_ablation(model, mgr, PROMPT, ANSWER, cancel=stop)
    with pytest.raises(UsageError, match="no tokens"):
        layer_ablation(model, mgr, PROMPT, [])
    with pytest.raises(UsageError, match="no adapter named"):
        layer_ablation(model, mgr, PROMPT, ANSWER, names=["zzz"])
