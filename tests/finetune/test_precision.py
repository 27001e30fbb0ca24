"""bf16 fine-tuning keeps float32 LoRA masters: the loss falls as in float32, small updates
survive, saved tensors are float32, and a float32 adapter runs on a bf16 base at inference."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from chatcli.lora.manager import AdapterManager
from chatcli.hub.checkpoint import load_checkpoint
from chatcli.lora.peft_io import LoRAAdapter, ModuleLoRA
from chatcli_finetune.run import run_training
from chatcli_finetune.trainable import TRAIN_NAME, LoRASpec, attach_trainable, lora_pairs
from tests.finetune.test_train import _args, _pref_data, _sft_data


def _losses(out) -> list[float]:
    return [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_bf16_sft_learns_like_fp32_and_saves_float32(tmp_path, tiny_model_dir):
    data = _sft_data(tmp_path)
    runs = {}
    for dtype in ("float32", "bfloat16"):
        r = run_training(_args("sft", data, tmp_path / dtype, tiny_model_dir, max_steps=25, lr=1e-2, dtype=dtype))
        runs[dtype] = _losses(tmp_path / dtype)
        if dtype == "bfloat16":
            assert r["model"].dtype == torch.bfloat16  # the frozen base stays bf16
            pairs = lora_pairs(r["model"])
            assert pairs and all(p.A.dtype == p.B.dtype == torch.float32 for p in pairs)
    f32, b16 = runs["float32"], runs["bfloat16"]
    assert b16[-1] < 0.1 * b16[0] and f32[-1] < 0.1 * f32[0]
    assert abs(b16[0] - f32[0]) < 0.05 * f32[0]  # same start within bf16 rounding
    assert b16[-1] < 2.0 * f32[-1] + 0.05  # comparable end point
    saved = load_file(str(tmp_path / "bfloat16" / "adapter_model.safetensors"))
    assert saved and all(t.dtype == torch.float32 for t in saved.values())


def test_small_updates_survive_in_bf16(tmp_path, tiny_model_dir):
    # lr 1e-5 for 2 steps moves A by ~2e-5; a bf16 A (ulp ~5e-4 at |A| ~ 0.1) would round that away.
    run_training(_args("sft", _sft_data(tmp_path), tmp_path / "out", tiny_model_dir, max_steps=2, lr=1e-5,
                       dtype="bfloat16", targets="q_proj"))  # fmt: skip
    init_model = load_checkpoint(tiny_model_dir, dtype=torch.bfloat16)
    attach_trainable(AdapterManager(init_model), LoRASpec(rank=4, alpha=8.0, targets=("q_proj",)), seed=0)
    init = {n.split(".lora_A")[0]: p.A.detach() for n, p in _named_pairs(init_model)}
    saved = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    for module, a0 in init.items():
        a1 = saved[f"base_model.model.{module}.lora_A.weight"]
        diff = (a1 - a0).abs()
        assert 0 < diff.max() <= 3e-5, diff.max()  # moved, by the optimizer's step and not by rounding
        assert (diff > 0).float().mean() > 0.5


def _named_pairs(model):
    from chatcli.model.lora_linear import LoRALinear

    return [(f"{n}.lora_A", m.lora[TRAIN_NAME]) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def test_bf16_dpo_and_reward_train_with_float32_head(tmp_path, tiny_model_dir):
    data = _pref_data(tmp_path)
    r = run_training(_args("reward", data, tmp_path / "rw", tiny_model_dir, max_steps=10, lr=5e-3, dtype="bfloat16"))
    assert r["head"].weight.dtype == torch.float32
    saved = load_file(str(tmp_path / "rw" / "adapter_model.safetensors"))
    assert all(t.dtype == torch.float32 for t in saved.values())
    losses = _losses(tmp_path / "rw")
    assert losses[-1] < 0.5 * losses[0]
    run_training(_args("dpo", data, tmp_path / "dpo", tiny_model_dir, max_steps=8, lr=5e-3, dtype="bfloat16"))
    losses = _losses(tmp_path / "dpo")
    assert losses[-1] < 0.7 * losses[0]


def _random_adapter(model, seed: int) -> LoRAAdapter:
    g = torch.Generator().manual_seed(seed)
    mods = {}
    for name, m in model.named_modules():
        if name.endswith(("q_proj", "down_proj")) and isinstance(m, torch.nn.Linear):
            A = torch.randn(4, m.in_features, generator=g) * 0.1
            B = torch.randn(m.out_features, 4, generator=g) * 0.1
            mods[name] = ModuleLoRA(A=A, B=B, alpha=8.0)
    return LoRAAdapter(modules=mods, source="test")


def test_float32_adapter_on_a_bf16_base_matches_the_float32_reference(tiny_model_dir):
    ids = torch.tensor([[1, 40, 77, 123, 9, 250, 31, 2, 5]])
    with torch.no_grad():
        base32 = load_checkpoint(tiny_model_dir)(ids)
        bf16_noise = (load_checkpoint(tiny_model_dir, dtype=torch.bfloat16)(ids).float() - base32).abs().max()
    ref_model = load_checkpoint(tiny_model_dir).eval()
    AdapterManager(ref_model).add(_random_adapter(ref_model, 3), "a")
    bf = load_checkpoint(tiny_model_dir, dtype=torch.bfloat16).eval()
    AdapterManager(bf).add(_random_adapter(bf, 3), "a")
    pairs = [m.lora["a"] for m in bf.modules() if hasattr(m, "lora") and "a" in m.lora]
    assert pairs and all(p.A.dtype == p.B.dtype == torch.float32 for p in pairs) and bf.dtype == torch.bfloat16
    # The same adapter cast to bf16 first (what loading a file onto a bf16 model does).
    bf_cast = load_checkpoint(tiny_model_dir, dtype=torch.bfloat16).eval()
    cast = _random_adapter(bf_cast, 3)
    for m in cast.modules.values():
        m.A, m.B = m.A.bfloat16(), m.B.bfloat16()
    AdapterManager(bf_cast).add(cast, "a")
    with torch.no_grad():
        want = ref_model(ids)
        got = bf(ids)  # the fused inference path, in bf16
        got_cast = bf_cast(ids)
    assert got.dtype == torch.bfloat16 and torch.isfinite(got.float()).all()
    err = (got.float() - want).abs().max()
    # Within bf16 tolerance: no worse than the bf16 base model is against the float32 one (this
    # random tiny model has logits ~30, so bf16 rounding alone moves them by ~1).
    assert err <= 2 * bf16_noise, (err, bf16_noise)
    assert (want - base32).abs().max() > 8 * err  # the adapter's effect is far above the rounding
    assert (got.float() - got_cast.float()).abs().max() <= 0.5 * bf16_noise
    for p in pairs:  # the training path (float32 low-rank product) agrees with the fused one
        p.A.requires_grad_(True)
    train_path = bf(ids)
    assert train_path.dtype == torch.bfloat16 and (train_path.float() - want).abs().max() <= 2 * bf16_noise
