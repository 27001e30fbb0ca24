"""An adapter that changes nothing measurable: /compare's line and the likely reason, on the tiny model."""

from __future__ import annotations

import pytest
import torch

from chatcli.hub.checkpoint import load_checkpoint
from chatcli.lora.compare import answer_effect, compare_answer
from chatcli.lora.manager import AdapterManager
from chatcli.lora.no_effect import NO_EFFECT_BITS, no_effect_line, no_effect_reason
from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA

PROMPT = [1, 5, 77, 300, 12, 9]
ANSWER = [240, 33, 18, 61, 150, 2]


def shapes(model) -> dict[str, tuple[int, int]]:
    """q_proj and v_proj of every layer: (in, out) features (read before any adapter wraps them)."""
    return {n: (m.in_features, m.out_features) for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in ("q_proj", "v_proj")}  # fmt: skip


def adapter(targets: dict[str, tuple[int, int]], seed: int = 1, *, a: float = 0.3, b: float = 0.3) -> LoRAAdapter:
    """A rank-4 LoRA on ``targets`` with A and B drawn at these sizes (0 = all zeros)."""
    gen = torch.Generator().manual_seed(seed)
    return LoRAAdapter(modules={n: ModuleLoRA(a * torch.randn(4, i, generator=gen), b * torch.randn(o, 4, generator=gen), 8.0)
                                for n, (i, o) in targets.items()})  # fmt: skip


@pytest.fixture
def setup(tiny_model_dir):
    model = load_checkpoint(tiny_model_dir)
    return model, AdapterManager(model), shapes(model)


def test_a_zero_b_adapter_is_said_to_change_nothing_because_b_is_zero(setup):
    model, mgr, targets = setup
    mgr.add(adapter(targets, b=0.0), "fresh")
    result = compare_answer(model, mgr, PROMPT, ANSWER)
    assert result.mean_kl_bits < NO_EFFECT_BITS
    assert result.no_effect.startswith("fresh changes nothing measurable on this answer (mean KL 0.0000 bits < 0.001): ")
    assert "B matrices are all zeros" in result.no_effect
    assert "no_effect" not in result.to_json()  # the JSON summary keeps its keys


def test_an_adapter_that_changes_the_answer_gets_no_line(setup):
    model, mgr, targets = setup
    mgr.add(adapter(targets), "real")
    result = compare_answer(model, mgr, PROMPT, ANSWER)
    assert result.mean_kl_bits > 0.01 and result.no_effect == ""


def test_scale_zero_zero_a_and_a_tiny_change_each_have_their_reason(setup):
    model, mgr, targets = setup
    mgr.add(adapter(targets), "zeroed")
    mgr.set_scale("zeroed", 0.0)
    assert "its scale is 0 (/lora-scale zeroed 1" in compare_answer(model, mgr, PROMPT, ANSWER).no_effect
    # /compare of an answer made at scale 0 (its recorded scale) says the same, whatever the scale now.
    mgr.set_scale("zeroed", 1.0)
    assert "its scale is 0" in compare_answer(model, mgr, PROMPT, ANSWER, scales={"zeroed": 0.0}).no_effect
    mgr.add(adapter(targets, 2, a=0.0), "zero_a")
    assert "its A matrices are all zeros" in compare_answer(model, mgr, PROMPT, ANSWER, names=["zero_a"]).no_effect
    mgr.add(adapter(targets, 3), "tiny", scale=1e-6)
    line = compare_answer(model, mgr, PROMPT, ANSWER, names=["tiny"]).no_effect
    assert "its change is too small: the largest ‖ΔW‖/‖W0‖ is " in line and "self_attn" in line
    mgr.add(LoRAAdapter(modules={}), "empty")
    assert "it wraps no layer of this model" in compare_answer(model, mgr, PROMPT, ANSWER, names=["empty"]).no_effect


def test_several_adapters_are_named_with_their_reasons(setup):
    model, mgr, targets = setup
    mgr.add(adapter(targets, b=0.0), "fresh")
    mgr.add(adapter(targets, 2), "off_scale", scale=0.0)
    line = no_effect_line(mgr, ["fresh", "off_scale"], 0.0)
    assert line.startswith("fresh, off_scale change nothing measurable")
    assert "fresh: its B matrices are all zeros" in line and "off_scale: its scale is 0" in line


def test_switched_off_is_a_reason_only_where_asked(setup):
    model, mgr, targets = setup
    mgr.add(adapter(targets), "real")
    mgr.disable("real")
    assert no_effect_reason(mgr, "real", check_enabled=True) == "it is switched off (/lora-on real)"
    assert "switched off" not in no_effect_reason(mgr, "real")  # /compare switches it on itself


def test_after_a_change_the_check_speaks_only_when_nothing_changed(setup):
    model, mgr, targets = setup
    mgr.add(adapter(targets), "real")
    assert answer_effect(model, mgr, PROMPT, ANSWER, "real") is None
    mgr.set_scale("real", 0.0)
    assert "its scale is 0" in answer_effect(model, mgr, PROMPT, ANSWER, "real")
    mgr.set_scale("real", 1.0)
    mgr.disable("real")
    assert answer_effect(model, mgr, PROMPT, ANSWER, "real") == "real changes nothing now: it is switched off (/lora-on real)"
    mgr.enable("real")
    with torch.no_grad():
        before = model(torch.tensor([PROMPT + ANSWER]))
    answer_effect(model, mgr, PROMPT, ANSWER, "real")
    with torch.no_grad():
        assert torch.equal(model(torch.tensor([PROMPT + ANSWER])), before)  # the check restored everything
