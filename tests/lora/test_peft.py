"""LoRA parity with PEFT (the oracle) on tiny random models, both directions of the file format."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from chatcli.lora.manager import AdapterManager
from chatcli.hub.checkpoint import load_checkpoint
from chatcli.model.lora_linear import LoRALinear
from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA
from tests.lora_helpers import IDS, logits, peft_model, save_peft
from tests.tiny import load_hf_oracle

TOL = 2e-4  # float32 summation order differs from PEFT's (packed input-major layout), as in test_model_parity

CASES = {
    "plain": dict(r=4, lora_alpha=7, target_modules="all-linear"),
    "rslora": dict(r=8, lora_alpha=5, use_rslora=True, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
    "patterns": dict(
        r=4, lora_alpha=6, target_modules=["q_proj", "v_proj", "down_proj", "up_proj"],
        rank_pattern={"q_proj": 2, r"layers\.1\.mlp\.down_proj": 6}, alpha_pattern={"v_proj": 3, "up_proj": 11},
    ),
    "rslora_patterns": dict(
        r=4, lora_alpha=5, use_rslora=True, target_modules=["q_proj", "up_proj"], rank_pattern={"up_proj": 9}, alpha_pattern={"q_proj": 2}
    ),
    "layers": dict(r=4, lora_alpha=9, target_modules=["q_proj", "gate_proj"], layers_to_transform=[1], layers_pattern="layers"),
    "layers_no_pattern": dict(r=3, lora_alpha=4, target_modules=["o_proj", "up_proj"], layers_to_transform=0),
    "regex": dict(r=4, lora_alpha=8, target_modules=r".*\.self_attn\.(q|k)_proj"),
    "exclude": dict(r=4, lora_alpha=8, target_modules="all-linear", exclude_modules=["down_proj"]),
    "lm_head": dict(r=4, lora_alpha=8, target_modules=["q_proj", "lm_head"]),
    "modules_to_save": dict(r=4, lora_alpha=8, target_modules=["v_proj"], modules_to_save=["lm_head", "embed_tokens"]),
}


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_peft(tmp_path, tiny_family_dirs, family, case):
    model_dir = tiny_family_dirs(family)
    pm = peft_model(model_dir, **CASES[case])
    ref = logits(pm)
    save_peft(pm, tmp_path / "ad")

    model = load_checkpoint(model_dir)
    base = logits(model)
    mgr = AdapterManager(model)
    info = mgr.load(tmp_path / "ad", name="a")
    out = logits(model)
    assert (out - base).abs().max() > 1e-2, "the adapter must change the logits"
    assert (out - ref).abs().max() <= TOL
    wrapped = {n for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    peft_wrapped = {n.removeprefix("base_model.model.") for n, m in pm.named_modules() if type(m).__name__ == "Linear" and hasattr(m, "lora_A")}
    assert wrapped == peft_wrapped
    assert info.modules == len(wrapped)

    # Unloading restores the base bit-exactly and puts the original module objects back.
    originals = {n: m for n, m in load_checkpoint(model_dir).named_modules()}
    mgr.unload("a")
    assert torch.equal(logits(model), base)
    assert set(dict(model.named_modules())) == set(originals)


def test_live_scale_matches_peft_set_scale(tmp_path, tiny_family_dirs):
    model_dir = tiny_family_dirs("llama")
    pm = peft_model(model_dir, r=4, lora_alpha=8, target_modules="all-linear")
    save_peft(pm, tmp_path / "ad")
    model = load_checkpoint(model_dir)
    mgr = AdapterManager(model)
    mgr.load(tmp_path / "ad", name="a", scale=0.5)
    for scale in (0.5, -1.25, 3.0):
        for m in pm.modules():
            if hasattr(m, "set_scale") and hasattr(m, "lora_A"):
                m.set_scale("default", scale)
        mgr.set_scale("a", scale)
        assert (logits(model) - logits(pm)).abs().max() <= TOL


def test_two_stacked_adapters_equal_peft_with_both_active(tmp_path, tiny_family_dirs):
    model_dir = tiny_family_dirs("qwen2")
    pm = peft_model(model_dir, seed=1, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    save_peft(pm, tmp_path / "one")
    pm2 = peft_model(model_dir, seed=2, r=2, lora_alpha=3, target_modules=["q_proj", "o_proj"])
    save_peft(pm2, tmp_path / "two")

    from peft import PeftModel

    hf = load_hf_oracle(model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        both = PeftModel.from_pretrained(hf, tmp_path / "one", adapter_name="one")
        both.load_adapter(tmp_path / "two", adapter_name="two")
        both.base_model.set_adapter(["one", "two"])
    both.eval()

    model = load_checkpoint(model_dir)
    base = logits(model)
    mgr = AdapterManager(model)
    mgr.load(tmp_path / "one")
    only_one = logits(model)
    mgr.load(tmp_path / "two")
    stacked = logits(model)
    assert (stacked - logits(both)).abs().max() <= TOL
    assert (stacked - only_one).abs().max() > 1e-2
    mgr.disable("one")
    assert (logits(model) - logits(pm2)).abs().max() <= TOL
    mgr.enable("one")
    assert (logits(model) - stacked).abs().max() <= 1e-5
    assert [i.name for i in mgr.list()] == ["one", "two"]
    mgr.unload("one")
    mgr.unload("two")
    assert torch.equal(logits(model), base)


def test_scale_zero_and_disabled_equal_base_exactly(tmp_path, tiny_family_dirs):
    model_dir = tiny_family_dirs("llama")
    save_peft(peft_model(model_dir, r=4, lora_alpha=8, target_modules="all-linear", modules_to_save=["lm_head"]), tmp_path / "ad")
    model = load_checkpoint(model_dir)
    base = logits(model)
    mgr = AdapterManager(model)
    mgr.load(tmp_path / "ad", name="a", scale=0)
    assert torch.equal(logits(model), base)
    mgr.set_scale("a", 1.0)
    on = logits(model)
    assert not torch.equal(on, base)
    mgr.disable("a")
    assert torch.equal(logits(model), base)
    mgr.enable("a")
    with mgr.disabled():
        assert torch.equal(logits(model), base)
    assert torch.equal(logits(model), on)
    assert mgr.info("a").enabled and mgr.info("a").scale == 1.0


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_merge_unmerge_round_trip(tmp_path, tiny_family_dirs, family):
    model_dir = tiny_family_dirs(family)
    save_peft(peft_model(model_dir, r=4, lora_alpha=8, target_modules="all-linear"), tmp_path / "ad")
    model = load_checkpoint(model_dir)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    base = logits(model)
    mgr = AdapterManager(model)
    mgr.load(tmp_path / "ad", name="a")
    unmerged = logits(model)
    mgr.merge("a")
    assert mgr.info("a").merged
    # Merged: the model holds its original modules again (nothing runs per token).
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    merged = logits(model)
    assert (merged - unmerged).abs().max() <= TOL

    # Scale changes on a merged adapter re-merge; a temporary base run restores the weights exactly.
    mgr.set_scale("a", 0.5)
    half = logits(model)
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    with mgr.disabled():
        assert (logits(model) - base).abs().max() <= TOL
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshot[k]), k
    assert torch.equal(logits(model), half)

    mgr.unmerge("a")
    mgr.set_scale("a", 1.0)
    assert (logits(model) - unmerged).abs().max() <= TOL
    mgr.unload("a")
    for k, v in model.state_dict().items():
        assert torch.allclose(v, weights[k], atol=1e-6, rtol=0), k
    assert (logits(model) - base).abs().max() <= TOL


def test_merge_refused_on_tied_lm_head(tmp_path, tiny_family_dirs):
    model_dir = tiny_family_dirs("llama")  # tied embeddings
    save_peft(peft_model(model_dir, r=4, lora_alpha=8, target_modules=["q_proj", "lm_head"]), tmp_path / "ad")
    model = load_checkpoint(model_dir)
    mgr = AdapterManager(model)
    mgr.load(tmp_path / "ad", name="a")
    before = logits(model)
    with pytest.raises(Exception, match="tied embeddings"):
        mgr.merge("a")
    assert torch.equal(logits(model), before) and not mgr.info("a").merged


def _random_adapter(model, seed: int) -> LoRAAdapter:
    gen = torch.Generator().manual_seed(seed)
    mods = {}
    for i, (name, rank, alpha) in enumerate([
        ("model.layers.0.self_attn.q_proj", 4, 8.0),
        ("model.layers.0.self_attn.v_proj", 2, 3.0),
        ("model.layers.1.mlp.down_proj", 6, 8.0),
        ("model.layers.1.self_attn.o_proj", 4, 8.0),
    ]):
        lin = model.get_submodule(name)
        mods[name] = ModuleLoRA(
            A=0.3 * torch.randn(rank, lin.in_features, generator=gen),
            B=0.3 * torch.randn(lin.out_features, rank, generator=gen),
            alpha=alpha,
        )
    head = model.lm_head.weight
    saved = {"lm_head": {"weight": head.detach() + 0.2 * torch.randn(head.shape, generator=gen)}}
    return LoRAAdapter(modules=mods, saved=saved, base_model="tiny")


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_chatcli_saved_adapter_loads_in_peft(tmp_path, tiny_family_dirs, family):
    from peft import PeftModel

    model_dir = tiny_family_dirs(family)
    model = load_checkpoint(model_dir)
    mgr = AdapterManager(model)
    mgr.add(_random_adapter(model, 3), "mine")
    ours = logits(model)
    out = mgr.save("mine", tmp_path / "mine")
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["modules_to_save"] == ["lm_head"]

    hf = load_hf_oracle(model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = PeftModel.from_pretrained(hf, out).eval()
    assert (logits(pm) - ours).abs().max() <= TOL

    # And back: the saved folder loads in chatcli with the same logits.
    fresh = load_checkpoint(model_dir)
    AdapterManager(fresh).load(out)
    assert (logits(fresh) - ours).abs().max() <= TOL


def test_kv_cache_decode_sees_the_adapter(tmp_path, tiny_family_dirs):
    from chatcli.model.kv_cache import KVCache

    model_dir = tiny_family_dirs("llama")
    save_peft(peft_model(model_dir, r=4, lora_alpha=8, target_modules="all-linear"), tmp_path / "ad")
    model = load_checkpoint(model_dir)
    AdapterManager(model).load(tmp_path / "ad")
    full = logits(model, IDS[:1])
    cache = KVCache(model.config, 1, torch.float32, "cpu")
    with torch.no_grad():
        model(IDS[:1, :8], cache)
        steps = [model(IDS[:1, i : i + 1], cache) for i in range(8, IDS.shape[1])]
    assert (torch.cat(steps, 1) - full[:, 8:]).abs().max() <= TOL
