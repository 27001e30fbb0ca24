"""Group-wise int4 (``--quantize int4``): packing, maths, the kernel against its reference, tiny models.

Tolerances, split as for int8 (tests/model/test_quantize.py):

* The quantisation error is bounded per weight: ``|W - Wq| <= s/2`` plus the bfloat16 rounding
  of s and z (test_quantize_int4_error_bound), and float weights that were dequantised Q4 blocks
  quantise back to those blocks (test_dequantised_q4_blocks_quantise_back); what it does to a real model's answers is
  measured on the default model by ``benchmarks/quant_quality.py``.
* Given the int4 weights, the engine computes with exactly them: the kernel (few rows, bfloat16
  activations) against float32 maths on the same bfloat16 inputs and the dequantised weight is
  off by the bfloat16 rounding of its output only (KERNEL_REL); many rows (prefill, scoring)
  equal a float model holding the dequantised weights to float32 rounding (PREFILL_TOL); decode
  through a whole tiny model stays within DECODE_TOL of that (each layer's input and output
  rounded to bfloat16).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from chatcli.engine.loader import load_engine
from chatcli.errors import UsageError
from chatcli.lora.validate import AdapterError
from chatcli.model.int4 import (
    ERROR_STEPS, KERNEL_MAX_ROWS, Int4Linear, pack, packing, quantize_int4, unpack,
)
from chatcli.model.int8 import Int8Linear
from chatcli.model.int8_embedding import Int8Embedding
from chatcli.model.qlinear import QuantizedLinear
from chatcli.model.quantize import PROJECTIONS, quantize_model
from tests.cli.test_generate import jsonl, run
from tests.lora_helpers import IDS, logits, peft_model, save_peft
from tests.model.test_quantize import _decode, _rel

KERNEL_REL = 2**-8  # bfloat16 keeps 8 significant bits: the output's rounding, relative
PREFILL_TOL = 1e-5
DECODE_TOL = 0.05  # max |logit difference| / max |logit|, int4 decode vs the dequantised float model


def test_packing_is_torchs_own():
    assert packing() is not None  # this build's layout is one of the three known (x86: avx512 or avx2)
    gen = torch.Generator().manual_seed(1)
    q = torch.randint(0, 16, (192, 96), generator=gen, dtype=torch.uint8)
    want = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1)
    assert torch.equal(pack(q), want)
    assert torch.equal(unpack(want), q)


def test_quantize_int4_error_bound():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(40, 80, generator=g) * torch.rand(40, 1, generator=g) * 3 + torch.randn(40, 1, generator=g)
    w[5] = 0.25  # a constant row: every group flat
    q, s, z = quantize_int4(w, 64)  # 80 inputs: two groups, the second padded
    assert q.shape == (40, 128) and s.shape == z.shape == (40, 2) and q.dtype == torch.uint8
    assert int(q.max()) <= 15 and s.dtype == z.dtype == torch.bfloat16
    deq = ((q.float().view(40, 2, 64) - 8) * s.float()[..., None] + z.float()[..., None]).view(40, 128)[:, :80]
    slack = (ERROR_STEPS * s.float() + z.float().abs() * 2**-8 + 1e-7).repeat_interleave(64, dim=1)[:, :80]
    assert torch.all((deq - w).abs() <= slack)
    assert torch.equal(deq[5], torch.full((80,), 0.25))  # a flat group is exact (0.25 is a bfloat16)
    lin = nn.Linear(80, 40, bias=False)
    lin.weight.data = w
    layer = Int4Linear.from_linear(lin, 64)
    assert torch.equal(layer.dequantize(torch.float32), deq) and layer.matches(w)
    assert not layer.matches(w + 10 * s.float().max())


def test_dequantised_q4_blocks_quantise_back():
    """A model converted from a Q4_1 GGUF without its file kept still gets the file's 4-bit values
    and the direct load's scales, whenever a block used both ends of its range (Q4_1's min/max
    quantiser makes every block do so)."""
    g = torch.Generator().manual_seed(4)
    q = torch.randint(0, 16, (64, 96), generator=g, dtype=torch.uint8)
    q[:, 0::32], q[:, 1::32] = 0, 15  # each block's min and max, as Q4_1 writes them
    d = (torch.rand(64, 3, generator=g) * 0.05 + 0.001).half().float()
    m = (-torch.rand(64, 3, generator=g) * 0.4).half().float()
    w = d.repeat_interleave(32, dim=1) * q.float() + m.repeat_interleave(32, dim=1)
    direct = Int4Linear.from_q4_blocks(q, d, m, None, torch.float32)
    lin = nn.Linear(96, 64, bias=False)
    lin.weight.data = w
    again = Int4Linear.from_linear(lin, 32)
    assert torch.equal(again.parts()[0], q)
    assert (again.dequantize(torch.float32) - direct.dequantize(torch.float32)).abs().max() <= 1e-6


@pytest.mark.parametrize("out_f,in_f,group", [(96, 64, 32), (40, 80, 64), (192, 576, 128)])
def test_int4_linear_kernel_and_dense_paths(out_f, in_f, group):
    torch.manual_seed(0)
    lin = nn.Linear(in_f, out_f)
    m = Int4Linear.from_linear(lin, group)
    w = m.dequantize(torch.float32)
    for rows in (1, 3, KERNEL_MAX_ROWS, KERNEL_MAX_ROWS + 1, 50):
        x = torch.randn(rows, in_f)
        with torch.no_grad():
            got = m(x.view(1, rows, in_f)).view(rows, out_f)
        assert got.dtype == torch.float32
        if rows <= KERNEL_MAX_ROWS:  # the kernel: float32 maths on the same bfloat16 input, output rounded
            want = x.to(torch.bfloat16).float() @ w.T
            assert torch.all((got - lin.bias.detach() - want).abs() <= want.abs() * KERNEL_REL + 1e-4), rows
        else:
            want = x @ w.T + lin.bias.detach()
            assert _rel(got, want) <= PREFILL_TOL, rows


def test_q4_blocks_keep_their_values():
    """GGUF Q4_1 (w = d q + m) and Q4_0 (w = d (q - 8)) map onto the kernel's (q - 8) s + z with
    the same q: only s and z are rounded to bfloat16."""
    g = torch.Generator().manual_seed(2)
    q = torch.randint(0, 16, (64, 96), generator=g, dtype=torch.uint8)
    d = (torch.rand(64, 3, generator=g) * 0.05 + 0.001).half().float()
    m = (-torch.rand(64, 3, generator=g) * 0.4).half().float()
    for mins in (m, None):
        layer = Int4Linear.from_q4_blocks(q, d, mins, None, torch.float32)
        qs, _, _ = layer.parts()
        assert torch.equal(qs, q)  # the 4-bit values as stored
        dd = d.repeat_interleave(32, dim=1)
        ref = dd * q.float() + mins.repeat_interleave(32, dim=1) if mins is not None else dd * (q.float() - 8)
        zero = (mins + 8 * d).abs().repeat_interleave(32, dim=1) if mins is not None else 0
        bound = 8 * dd * 2**-8 + zero * 2**-8 + 1e-7  # bfloat16 rounds within 2^-8 relative: 8 steps of s, plus z
        assert torch.all((layer.dequantize(torch.float32) - ref).abs() <= bound)


def test_int4_model_replaces_projections_and_keeps_an_int8_head(tiny_model_dir):
    engine = load_engine(str(tiny_model_dir), device="cpu", quantize="int4")
    model, cfg = engine.model, engine.model.config
    int4 = [n for n, m in model.named_modules() if isinstance(m, Int4Linear)]
    assert len(int4) == len(PROJECTIONS) * cfg.num_hidden_layers
    assert isinstance(model.lm_head, Int8Linear)  # the head stays 8-bit (benchmarks/PERFLOG.md)
    assert isinstance(model.model.embed_tokens, Int8Embedding)  # tied: looked up from the head's rows
    assert model.dtype == torch.float32 and model.model.embed_tokens(IDS).dtype == torch.float32
    assert engine.identity.quantize == "int4"
    assert engine.identity.parameters == load_engine(str(tiny_model_dir), device="cpu").identity.parameters
    assert quantize_model(model, "int4") == 0


def _dequantised_float(model: nn.Module, like: nn.Module) -> None:
    """Give ``model``'s quantised layers' places float copies of ``like``'s dequantised weights
    (a lookup from the head's int8 rows becomes a float table of those rows)."""
    for name, layer in like.named_modules():
        if isinstance(layer, Int8Embedding):
            owner, _, attr = name.rpartition(".")
            setattr(model.get_submodule(owner), attr, nn.Embedding.from_pretrained(layer.dequantize(torch.float32)))
        if isinstance(layer, QuantizedLinear):
            owner, _, attr = name.rpartition(".")
            parent = model.get_submodule(owner)
            new = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
            new.weight = nn.Parameter(layer.dequantize(torch.float32), requires_grad=False)
            new.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().float(), requires_grad=False)
            setattr(parent, attr, new)


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])  # tied head; q/k/v bias (padded rows); q/k norms
def test_int4_model_computes_with_its_int4_weights(tiny_family_dirs, family):
    d = str(tiny_family_dirs(family))
    q = load_engine(d, device="cpu", quantize="int4").model
    ref = load_engine(d, device="cpu", quantize="none").model
    _dequantised_float(ref, q)
    with torch.no_grad():
        want = ref(IDS).float()
        assert IDS.numel() > KERNEL_MAX_ROWS
        assert _rel(q(IDS).float(), want) <= PREFILL_TOL  # prefill: dense matmul on the dequantised weights
    dec = _decode(q)
    assert _rel(dec, want) <= DECODE_TOL  # decode: the int4 kernel (and the int8 head's), bfloat16 activations
    assert (dec.argmax(-1) == want.argmax(-1)).float().mean() >= 0.9


@pytest.mark.parametrize("group", [64, 128])
def test_other_group_sizes(tiny_model_dir, group):
    engine = load_engine(str(tiny_model_dir), device="cpu", quantize="int4", group_size=group)
    layer = engine.model.model.layers[0].mlp.down_proj
    assert isinstance(layer, Int4Linear) and layer.group_size == group
    assert torch.isfinite(_decode(engine.model, IDS[:, :4])).all()
    with pytest.raises(ValueError, match="32, 64, 128"):
        load_engine(str(tiny_model_dir), device="cpu", quantize="int4", group_size=16)


def test_fused_int4_groups_match_the_modules_one_by_one(tiny_family_dirs):
    model = load_engine(str(tiny_family_dirs("qwen2")), device="cpu", quantize="int4").model  # bias; k/v 32 rows
    attn = model.model.layers[0].self_attn
    group = attn.qkv_group
    assert group is not None and group.names == ("q_proj", "k_proj", "v_proj")
    assert attn.k_proj.qweight.data_ptr() == group.fused.qweight[group.starts[1]].data_ptr()  # a view, no copy
    for rows in (2, KERNEL_MAX_ROWS + 4):  # the kernel, and the dense path
        x = torch.randn(1, rows, model.config.hidden_size)
        with torch.no_grad():
            fused = group.run(attn, x)
            alone = [attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)]
        for a, b in zip(fused, alone):
            assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-6, atol=1e-6)
    q, k, v = fused
    assert k.data_ptr() == q.data_ptr() + group.starts[1] * q.element_size()  # views of one output, gaps skipped
    attn.k_proj.qweight = attn.k_proj.qweight.clone()  # the same values in memory of its own: no longer the view
    assert group.run(attn, x) is None
    attn.k_proj = Int4Linear.from_linear(nn.Linear(model.config.hidden_size, alone[1].shape[-1]))
    assert group.run(attn, x) is None  # a replaced member: the caller calls the modules


def test_moving_an_int4_model_keeps_int4_weights(tiny_model_dir):
    model = load_engine(str(tiny_model_dir), device="cpu", quantize="int4").model
    model.to(torch.bfloat16)
    layer = model.model.layers[0].self_attn.o_proj
    assert layer.qweight.dtype == torch.uint8 and layer.scales_zeros.dtype == torch.bfloat16
    assert layer.dtype == torch.bfloat16 and model(IDS[:, :3]).dtype == torch.bfloat16


def test_lora_unmerged_on_int4_matches_peft_on_the_dequantised_base(tiny_model_dir, tmp_path):
    targets = ["q_proj", "k_proj", "v_proj", "down_proj", "gate_proj"]
    pm = peft_model(tiny_model_dir, r=4, lora_alpha=8, target_modules=targets)
    path = save_peft(pm, tmp_path / "ad")
    q = load_engine(str(tiny_model_dir), device="cpu", quantize="int4")
    # PEFT's model on exactly the weights chatcli computes with (the head untied: its own copy; the
    # embedding looked up from the head's int8 rows).
    with torch.no_grad():
        for name, layer in q.model.named_modules():
            if isinstance(layer, (QuantizedLinear, Int8Embedding)):
                hf = pm.base_model.model.get_submodule(name)
                hf = getattr(hf, "base_layer", hf)
                hf.weight = nn.Parameter(layer.dequantize(torch.float32), requires_grad=False)
    base = logits(q.model)
    info = q.adapters.load(path)
    got = logits(q.model)
    want = logits(pm)
    assert (got - base).abs().max() > 1.0  # the adapter really changes the answer
    assert _rel(got, want) <= 1e-4  # prefill: dense float32 on the dequantised base plus PEFT's LoRA term
    assert _rel(_decode(q.model), want) <= DECODE_TOL  # decode: fused int4 groups + the LoRA side path
    assert q.model.model.layers[0].self_attn.q_proj.base.method == "int4"
    q.adapters.unload(info.name)
    assert torch.equal(logits(q.model), base)  # unloading restores the int4 model exactly


def test_merging_into_int4_weights_is_refused_and_changes_nothing(tiny_model_dir, tmp_path):
    path = save_peft(peft_model(tiny_model_dir, r=4, target_modules=["q_proj", "o_proj"]), tmp_path / "ad")
    q = load_engine(str(tiny_model_dir), device="cpu", quantize="int4")
    info = q.adapters.load(path)
    before, version = logits(q.model), q.adapters.weights_version()
    with pytest.raises(AdapterError) as e:
        q.adapters.merge(info.name)
    msg = str(e.value)
    assert "\n" not in msg and "int4 weights (--quantize int4)" in msg and "without --quantize" in msg
    assert torch.equal(logits(q.model), before) and q.adapters.weights_version() == version
    assert not q.adapters.info(info.name).merged


def test_fine_tuning_an_int4_model_is_refused(tiny_model_dir):
    from chatcli_finetune.trainable import LoRASpec, attach_trainable

    engine = load_engine(str(tiny_model_dir), device="cpu", quantize="int4")
    with pytest.raises(UsageError, match="cannot fine-tune an int4-quantized model.*without --quantize"):
        attach_trainable(engine.adapters, LoRASpec(), seed=0)
    assert not engine.adapters.names


def test_generate_quantize_int4_end_to_end(capsys, tiny_model_dir):
    args = ("generate", "Paris is", "--model", str(tiny_model_dir), "--json", "-n", "6", "--temperature", "0")
    code, out, err = run(capsys, *args, "--quantize", "int4")
    assert code == 0, err
    objs = jsonl(out)
    assert objs[0]["type"] == "meta" and objs[0]["quantize"] == "int4"
    steps = [o for o in objs if o["type"] == "step"]
    assert objs[-1]["type"] == "done" and len(steps) == objs[-1]["completion_tokens"] == 6
    assert all(0 < s["model_prob"] <= 1 and np.isfinite(s["model_prob"]) for s in steps)


@pytest.mark.parametrize("command", [["score", "The quick brown fox"], ["lens", "The quick brown fox", "--raw"],
                                     ["attention", "The quick brown fox", "--raw"]])
def test_score_lens_and_attention_take_int4(capsys, tiny_model_dir, command):
    import json

    code, out, err = run(capsys, *command, "--model", str(tiny_model_dir), "--json", "--quantize", "int4")
    assert code == 0, err
    objs = [json.loads(line) for line in out.splitlines()]
    assert objs and all(isinstance(o, dict) for o in objs)


def test_python_api_loads_int4(tiny_model_dir):
    import chatcli

    engine = chatcli.load_model(str(tiny_model_dir), device="cpu", quantize="int4")
    assert engine.identity.quantize == "int4" and engine.identity.precision == "int4+float32"
    text = chatcli.generate(engine, "Paris is", max_tokens=4, temperature=0)
    assert isinstance(text, str)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_int4_on_cuda_dequantises_and_matches_the_cpu(tiny_model_dir):
    """CUDA has no int4 kernel here: every product dequantises (correct, not fast); the weights
    quantised on the GPU are the CPU's, so prefill logits agree to float32 rounding."""
    cpu = load_engine(str(tiny_model_dir), device="cpu", quantize="int4").model
    gpu = load_engine(str(tiny_model_dir), device="cuda", quantize="int4").model
    layer = gpu.model.layers[0].mlp.up_proj
    assert layer.qweight.device.type == "cuda"
    assert torch.equal(layer.parts()[0].cpu(), cpu.model.layers[0].mlp.up_proj.parts()[0])
    with torch.no_grad():
        want, got = cpu(IDS).float(), gpu(IDS.cuda()).float().cpu()
    assert _rel(got, want) <= 1e-4
    assert torch.isfinite(_decode(gpu, IDS.cuda()[:, :4])).all()
