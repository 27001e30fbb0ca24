"""Teacher-forced base-vs-adapter comparison: figures checked against separate forwards."""

from __future__ import annotations

import math

import pytest
import torch

from chatcli.lora.manager import AdapterManager
from chatcli.hub.checkpoint import load_checkpoint
from chatcli.lora.compare import compare_answer
from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA
from chatcli.errors import ChatcliError

PROMPT = [1, 5, 77, 300, 12, 9]
ANSWER = [240, 33, 18, 61, 150, 2]


def _adapter(model, seed: int, names=("q_proj", "v_proj", "down_proj")) -> LoRAAdapter:
    gen = torch.Generator().manual_seed(seed)
    mods = {}
    for n, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in names:
            mods[n] = ModuleLoRA(0.3 * torch.randn(4, m.in_features, generator=gen), 0.3 * torch.randn(m.out_features, 4, generator=gen), 8.0)
    return LoRAAdapter(modules=mods)


def _probs(model, ids):
    with torch.no_grad():
        return torch.softmax(model(torch.tensor([ids]))[0].double(), -1)


@pytest.fixture
def setup(tiny_model_dir):
    model = load_checkpoint(tiny_model_dir)
    mgr = AdapterManager(model)
    return model, mgr


def test_figures_match_separate_forwards(setup, tiny_model_dir):
    model, mgr = setup
    base_model = load_checkpoint(tiny_model_dir)
    mgr.add(_adapter(model, 1), "a")
    cmp = compare_answer(model, mgr, PROMPT, ANSWER, top_n=3)
    pa = _probs(model, PROMPT + ANSWER)[len(PROMPT) - 1 : -1]
    pb = _probs(base_model, PROMPT + ANSWER)[len(PROMPT) - 1 : -1]
    assert len(cmp.steps) == len(ANSWER) and cmp.adapters == ("a",)
    for i, s in enumerate(cmp.steps):
        kl = float((pa[i] * (pa[i].log() - pb[i].log())).sum()) / math.log(2)
        assert s.kl_bits == pytest.approx(kl, abs=1e-4)
        assert s.p_adapter == pytest.approx(float(pa[i, ANSWER[i]]), abs=1e-6)
        assert s.p_base == pytest.approx(float(pb[i, ANSWER[i]]), abs=1e-6)
        assert s.shift == pytest.approx(s.p_adapter - s.p_base)
        assert s.choice_changed == (int(pa[i].argmax()) != int(pb[i].argmax()))
        ids = {t.id for t in s.top}
        assert set(pa[i].topk(3).indices.tolist()) <= ids and set(pb[i].topk(3).indices.tolist()) <= ids
        top = [max(t.p_base, t.p_adapter) for t in s.top]
        assert top == sorted(top, reverse=True)
    assert cmp.mean_kl_bits > 0.01
    assert cmp.max_step.kl_bits == max(s.kl_bits for s in cmp.steps)
    summary = cmp.to_json()
    assert summary["tokens"] == len(ANSWER) and summary["choices_changed"] == sum(s.choice_changed for s in cmp.steps)


def test_scale_zero_gives_zero_kl(setup):
    model, mgr = setup
    mgr.add(_adapter(model, 1), "a", scale=0.0)
    cmp = compare_answer(model, mgr, PROMPT, ANSWER, names=["a"])
    # Named adapters are switched on for the adapter pass, at their scale: 0 changes nothing.
    assert all(s.kl_bits == 0.0 and s.shift == 0.0 for s in cmp.steps)


def test_named_adapter_is_compared_against_the_others(setup, tiny_model_dir):
    model, mgr = setup
    mgr.add(_adapter(model, 1), "a")
    mgr.add(_adapter(model, 2, names=("o_proj", "up_proj")), "b")
    mgr.disable("b")  # off now: /compare b still shows what b would change
    before = model(torch.tensor([PROMPT]))
    cmp = compare_answer(model, mgr, PROMPT, ANSWER, names=["b"])
    only_a = load_checkpoint(tiny_model_dir)
    AdapterManager(only_a).add(mgr.adapter("a"), "a")
    a_and_b = load_checkpoint(tiny_model_dir)
    both = AdapterManager(a_and_b)
    both.add(mgr.adapter("a"), "a")
    both.add(mgr.adapter("b"), "b")
    pb = _probs(only_a, PROMPT + ANSWER)[len(PROMPT) - 1 : -1]
    pa = _probs(a_and_b, PROMPT + ANSWER)[len(PROMPT) - 1 : -1]
    for i, s in enumerate(cmp.steps):
        assert s.p_base == pytest.approx(float(pb[i, ANSWER[i]]), abs=1e-6)
        assert s.p_adapter == pytest.approx(float(pa[i, ANSWER[i]]), abs=1e-6)
    # Everything is as before: b still off, same logits.
    assert not mgr.info("b").enabled and mgr.info("a").enabled
    assert torch.equal(model(torch.tensor([PROMPT])), before)


def test_merged_adapter_is_restored_bit_exactly(setup):
    model, mgr = setup
    mgr.add(_adapter(model, 1), "a")
    mgr.merge("a")
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    cmp = compare_answer(model, mgr, PROMPT, ANSWER)
    assert cmp.mean_kl_bits > 0.01
    assert mgr.info("a").merged
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k


def test_refusals(setup):
    model, mgr = setup
    with pytest.raises(ChatcliError, match="no adapter is loaded"):
        compare_answer(model, mgr, PROMPT, ANSWER)
    mgr.add(_adapter(model, 1), "a")
    with pytest.raises(ChatcliError, match="no tokens"):
        compare_answer(model, mgr, PROMPT, [])
    with pytest.raises(ChatcliError, match="no adapter named 'zzz'"):
        compare_answer(model, mgr, PROMPT, ANSWER, names=["zzz"])
    with pytest.raises(ChatcliError, match="context"):
        compare_answer(model, mgr, PROMPT, ANSWER * 100)
