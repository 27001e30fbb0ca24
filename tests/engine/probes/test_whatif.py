"""What-if on a step: the frozen step re-formed under other settings is exactly what sampling does.

The oracle is a real answer: every step's recorded ``prob`` (the chosen token's
probability in the distribution it was drawn from) must come back from
``what_if(step_logits(prefix), params, prefix)``.
"""

from __future__ import annotations

import math

import pytest
import torch

from chatcli.engine.events import Step
from chatcli.engine.loader import load_engine
from chatcli.engine.params import SamplingParams
from chatcli.engine.probes.whatif import WhatIf, logits_at_scales, step_logits, what_if
from chatcli.engine.sampling import sampling_distribution
from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA

TEXT = "The capital of France is"


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return load_engine(str(tiny_model_dir), device="cpu", warm_up=False)


def _steps(engine, params: SamplingParams) -> list[Step]:
    return [e for e in engine.complete(TEXT, params) if isinstance(e, Step)]


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=0.8, top_k=20, top_p=0.9, min_p=0.05, repetition_penalty=1.3, max_tokens=12, seed=3),
    SamplingParams(temperature=1.4, top_p=0.7, max_tokens=12, seed=5),
    SamplingParams(temperature=0.0, repetition_penalty=1.5, max_tokens=8),
])  # fmt: skip
def test_the_answers_own_settings_give_back_every_recorded_probability(engine, params):
    steps = _steps(engine, params)
    assert len(steps) >= 6
    prompt = engine.completion_ids(TEXT)
    for s in steps:
        prefix = prompt + [t.id for t in steps[: s.index]]
        w = what_if(step_logits(engine.model, prefix), params, prefix, engine.tokenizer, top_n=5, include=[s.id])
        row = w.row(s.id)
        assert row is not None and row.cut is None  # the drawn token survived every filter
        assert row.prob == pytest.approx(s.prob, rel=1e-4, abs=1e-6)
        assert row.model_prob == pytest.approx(s.model_prob, rel=1e-4, abs=1e-6)
        assert w.entropy_model == pytest.approx(s.entropy, abs=1e-4)
        assert [r.id for r in w.rows[:5]] == [t.id for t in s.top]  # the rows are the step's own alternatives
        assert row.token == s.token


def test_temperature_zero_is_one_hot_on_the_penalised_argmax():
    logits = torch.tensor([3.0, 2.9, 1.0, -1.0])
    w = what_if(logits, SamplingParams(temperature=0.0), None, top_n=4)
    assert [r.prob for r in w.rows] == [1.0, 0.0, 0.0, 0.0]
    assert [r.cut for r in w.rows] == [None, "greedy", "greedy", "greedy"]
    assert w.kept == 1 and w.entropy_sampled == 0.0
    # The penalty divides id 0's positive logit by 2: id 1 becomes the argmax.
    w = what_if(logits, SamplingParams(temperature=0.0, repetition_penalty=2.0), [0], top_n=4)
    assert [(r.id, r.prob, r.cut) for r in w.rows[:2]] == [(0, 0.0, "greedy"), (1, 1.0, None)]


def test_each_row_names_the_first_filter_that_removed_it():
    # probabilities 0.4 0.3 0.15 0.1 0.05: top-k 4 drops the last; top-p 0.8 over the renormalised
    # four (0.421 0.316 0.158 0.105) keeps three (0.737 < 0.8 before the third); min-p 0.5 then
    # drops 0.15 < 0.5 * 0.4.
    logits = torch.log(torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05]))
    params = SamplingParams(temperature=1.0, top_k=4, top_p=0.8, min_p=0.5)
    w = what_if(logits, params, None, top_n=5)
    assert [r.cut for r in w.rows] == [None, None, "min-p", "top-p", "top-k"]
    assert [r.prob for r in w.rows] == pytest.approx([0.4 / 0.7, 0.3 / 0.7, 0, 0, 0])
    assert [r.model_prob for r in w.rows] == pytest.approx([0.4, 0.3, 0.15, 0.1, 0.05])
    assert [r.logit for r in w.rows] == pytest.approx(logits.tolist())
    assert w.kept == 2
    # Only the filters that are on can cut: top-p alone cuts the last two.
    w = what_if(logits, SamplingParams(temperature=1.0, top_p=0.8), None, top_n=5)
    assert [r.cut for r in w.rows] == [None, None, None, "top-p", "top-p"]


def test_masses_add_up_and_follow_sampling_under_the_repetition_penalty():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(500, generator=gen) * 3
    prev = [int(i) for i in torch.topk(logits, 3).indices]  # the three favourites were already said
    params = SamplingParams(temperature=0.7, top_p=0.95, repetition_penalty=1.8)
    w = what_if(logits, params, prev, top_n=10)
    used = sampling_distribution(logits, params, prev)
    assert len(w.rows) == 10
    assert [r.prob for r in w.rows] == pytest.approx([float(used[r.id]) for r in w.rows])
    assert sum(r.prob for r in w.rows) + w.outside_prob_mass == pytest.approx(1.0, abs=1e-5)
    assert sum(r.model_prob for r in w.rows) + w.outside_model_mass == pytest.approx(1.0, abs=1e-5)
    assert w.shown_model_mass + w.outside_model_mass == pytest.approx(1.0)
    assert w.kept == int((used > 0).sum())
    assert 0 < w.entropy_sampled < w.entropy_model < math.log2(500)
    penalised = w.row(prev[0])
    assert penalised is not None and penalised.prob < penalised.model_prob  # said before: pushed down
    assert w.to_json()["type"] == "whatif" and len(w.to_json()["rows"]) == 10


def test_include_shows_a_token_outside_the_top_and_counts_it_as_shown():
    logits = torch.tensor([5.0, 4.0, 3.0, 0.0, -2.0])
    w = what_if(logits, SamplingParams(temperature=1.0), None, top_n=2, include=[4])
    assert [r.id for r in w.rows] == [0, 1, 4]
    assert w.shown_model_mass == pytest.approx(float(torch.softmax(logits, 0)[[0, 1, 4]].sum()))
    assert isinstance(w, WhatIf)


def _with_adapter(engine):
    lin = engine.model.get_submodule("model.layers.0.self_attn.q_proj")
    gen = torch.Generator().manual_seed(1)
    lora = ModuleLoRA(torch.randn(2, lin.in_features, generator=gen), torch.randn(lin.out_features, 2, generator=gen), 4.0)
    engine.adapters.add(LoRAAdapter(modules={"model.layers.0.self_attn.q_proj": lora}), "a", scale=1.0)


@pytest.mark.parametrize("merged", [False, True])
def test_logits_at_scales_rescores_the_prefix_and_restores_the_manager(tiny_model_dir, merged):
    engine = load_engine(str(tiny_model_dir), device="cpu", warm_up=False)
    manager, model = engine.adapters, engine.model
    _with_adapter(engine)
    if merged:
        manager.merge("a")
    ids = engine.completion_ids(TEXT)
    before = step_logits(model, ids)
    state = [(i.name, i.scale, i.enabled, i.merged) for i in manager.list()]
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    half = logits_at_scales(model, manager, ids, {"a": 0.5})
    off = logits_at_scales(model, manager, ids, {"a": 0.0})
    assert not torch.allclose(half, before) and not torch.allclose(off, half)
    # The same as setting the scale for real, and after it, everything is as it was.
    assert [(i.name, i.scale, i.enabled, i.merged) for i in manager.list()] == state
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert torch.equal(step_logits(model, ids), before)
    with manager.override(off=["a"]):
        base = step_logits(model, ids)
    assert torch.allclose(off, base, atol=1e-5)
    manager.set_scale("a", 0.5)
    assert torch.allclose(step_logits(model, ids), half, atol=1e-5)


def test_invalid_logits_are_one_generation_error():
    from chatcli.errors import GenerationError

    with pytest.raises(GenerationError, match="invalid logits"):
        what_if(torch.tensor([1.0, float("nan"), 0.0]), SamplingParams(), None)


def test_an_empty_or_too_long_prefix_is_one_usage_error(engine):
    from chatcli.errors import UsageError

    with pytest.raises(UsageError, match="no prefix"):
        step_logits(engine.model, [])
    with pytest.raises(UsageError, match="context"):
        step_logits(engine.model, [5] * (engine.model.config.context_length + 1))
