"""A loaded engine owns its model's one adapter manager, and its generator follows the
manager's weights version: any adapter change drops the cached prompt prefix."""

from __future__ import annotations

import torch

from chatcli.engine.events import Done
from chatcli.engine.loader import load_engine
from chatcli.engine.params import SamplingParams
from chatcli.lora.manager import AdapterManager
from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA

ONE_TOKEN = SamplingParams(temperature=0.0, max_tokens=1)
TEXT = "The capital of France is"


def _prefilled(engine) -> int:
    """Prompt tokens the engine forwarded for one greedy token of TEXT (the rest came from its cache)."""
    done = [e for e in engine.complete(TEXT, ONE_TOKEN) if isinstance(e, Done)][-1]
    return done.prefilled_tokens


def test_the_engine_builds_the_one_manager_and_the_model_carries_none(tiny_model_dir):
    engine = load_engine(str(tiny_model_dir), device="cpu", warm_up=False)
    assert isinstance(engine.adapters, AdapterManager) and engine.adapters.model is engine.model
    assert not [k for k, v in vars(engine.model).items() if isinstance(v, AdapterManager)]
    assert engine.adapters.guard == engine.generator.idle  # changes wait for no answer


def test_adapter_changes_and_overrides_drop_the_cached_prefix(tiny_model_dir):
    engine = load_engine(str(tiny_model_dir), device="cpu", warm_up=False)
    n = len(engine.completion_ids(TEXT))
    assert _prefilled(engine) == n
    assert _prefilled(engine) == 1  # same weights: only the last prompt token is re-run
    lin = engine.model.get_submodule("model.layers.0.self_attn.q_proj")
    gen = torch.Generator().manual_seed(0)
    lora = ModuleLoRA(torch.randn(2, lin.in_features, generator=gen), torch.randn(lin.out_features, 2, generator=gen), 4.0)
    engine.adapters.add(LoRAAdapter(modules={"model.layers.0.self_attn.q_proj": lora}), "a")
    assert _prefilled(engine) == n  # new weights: nothing cached is reused
    assert _prefilled(engine) == 1
    engine.adapters.set_scale("a", 0.5)
    assert _prefilled(engine) == n
    with engine.adapters.override(off=["a"]):
        assert _prefilled(engine) == n
    assert _prefilled(engine) == n  # back to the adapter's weights
