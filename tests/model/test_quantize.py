"""Weight-only int8 (``--quantize int8``) on tiny models: maths, tolerance, LoRA, CLI.

Tolerance, and why it is split in two:

* The quantisation error itself is bounded per weight: ``|W - Q*s| <= s/2`` with
  ``s = max|W_row| / 127`` rounded up to bfloat16 (test_scales_round_trip). How much
  that moves a model's answers is a property of the model, measured on the real one
  by ``benchmarks/quant_quality.py`` (the tiny random models here are chaotic, so a
  0.4 % weight error moves their logits by several percent: no useful bound).
* Given the int8 weights, the engine must compute with exactly them: prefill/scoring
  (more than KERNEL_MAX_ROWS rows) equals a float model holding the dequantised
  weights ``Q*s`` (to float32 rounding); decode (few rows, the int8 kernel with
  bfloat16 activations) stays within DECODE_TOL of it, relative to the largest
  logit: the bfloat16 rounding of each layer's input and output (a whole bfloat16
  model differs from float32 by 2.5-6 % on these models, measured).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from chatcli.model.kv_cache import KVCache
from chatcli.engine.loader import load_engine
from chatcli.lora.validate import AdapterError
from chatcli.model.int8 import KERNEL_MAX_ROWS, Int8Linear, quantize_int8
from chatcli.model.int8_embedding import Int8Embedding
from chatcli.model.quantize import PROJECTIONS, quantizable, quantize_model
from chatcli.errors import UsageError
from tests.lora_helpers import IDS, logits, peft_model, save_peft
from tests.cli.test_generate import jsonl, run

DECODE_TOL = 0.04  # max |logit difference| / max |logit|, int8 decode vs the dequantised float model
PREFILL_TOL = 1e-5


def _dequantised_float(model: nn.Module) -> None:
    """Replace each layer int8 would take by an nn.Linear holding exactly Q*s (float32); a tied
    embedding looks up the same Q*s rows, as an int8 model's does (Int8Embedding)."""
    for parent, attr, lin, _ in quantizable(model):
        q = Int8Linear.from_linear(lin)
        new = nn.Linear(lin.in_features, lin.out_features, bias=lin.bias is not None)
        new.weight = nn.Parameter(q.dequantize(torch.float32), requires_grad=False)
        new.bias = lin.bias
        setattr(parent, attr, new)
    if model.config.tie_word_embeddings:
        model.model.embed_tokens.weight = model.lm_head.weight


@torch.no_grad()
def _decode(model, ids: torch.Tensor = IDS) -> torch.Tensor:
    """Logits [B, S, V] computed one token at a time through the KV cache (the decode path)."""
    cache = KVCache(model.config, ids.shape[0], model.dtype, model.device)
    return torch.cat([model(ids[:, i : i + 1], cache=cache) for i in range(ids.shape[1])], dim=1).float()


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a - ref).abs().max() / ref.abs().max()).item()


def test_scales_round_trip():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(300, 64, generator=g) * torch.rand(300, 1, generator=g) * 5  # rows of very different size
    w[7] = 0.0  # an all-zero row
    q, s = quantize_int8(w)
    assert q.dtype == torch.int8 and s.dtype == torch.bfloat16 and q.shape == w.shape and s.shape == (300,)
    assert int(q.abs().max()) <= 127
    live = torch.arange(300) != 7
    assert int(q[live].abs().amax(dim=1).min()) >= 126  # rounding the scale up costs at most one level
    assert torch.all(q[7] == 0)
    err = (q.float() * s.float()[:, None] - w).abs()
    assert torch.all(err <= s.float()[:, None] / 2 + 1e-7)  # round to nearest, never clipped
    lin = nn.Linear(64, 300, bias=False)
    lin.weight.data = w
    assert torch.equal(Int8Linear.from_linear(lin).dequantize(torch.float32), q.float() * s.float()[:, None])


def test_quantizing_rows_in_chunks_changes_nothing(monkeypatch):
    from chatcli.model import int8

    w = torch.randn(300, 64, generator=torch.Generator().manual_seed(3))
    whole = quantize_int8(w)
    monkeypatch.setattr(int8, "_ROWS_AT_ONCE", 7)  # 300 rows in 43 chunks, the last one short
    chunked = quantize_int8(w)
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])


@pytest.mark.parametrize("in_features", [64, 12])  # 12: not a multiple of 16, the kernel is not used
def test_int8_linear_kernel_and_dense_paths(in_features):
    torch.manual_seed(0)
    lin = nn.Linear(in_features, 40)
    m = Int8Linear.from_linear(lin)
    ref_w = m.dequantize(torch.float32)
    for rows in (1, 3, KERNEL_MAX_ROWS, KERNEL_MAX_ROWS + 1, 50):
        x = torch.randn(rows, in_features)
        want = x @ ref_w.T + lin.bias
        got = m(x.view(1, rows, in_features)).view(rows, 40)
        tol = 1e-5 if rows > KERNEL_MAX_ROWS or in_features % 16 else 2e-2  # bfloat16 activations in the kernel
        assert got.dtype == torch.float32
        assert _rel(got.detach(), want.detach()) <= tol, rows


def test_an_int8_head_recomputes_its_largest_logits_exactly():
    """The kernel rounds its output to bfloat16; a head's top ``exact_top`` logits are float32."""
    torch.manual_seed(0)
    head = Int8Linear.from_linear(nn.Linear(64, 3000, bias=False))
    w = head.dequantize(torch.float32)
    x = torch.randn(3, 64) * 4
    want = x @ w.T  # float32, the dense path's numbers
    plain = head(x)
    head.exact_top = 50
    got = head(x)
    top = got.topk(50, dim=-1).indices
    assert torch.allclose(got.gather(1, top), want.gather(1, top), rtol=1e-5, atol=1e-5)
    assert (plain - want).abs().max() > 1e-3  # the bfloat16 rounding the head removes for its top
    rest = torch.ones_like(got, dtype=torch.bool).scatter_(1, top, False)
    assert torch.equal(got[rest], plain[rest])


def test_quantize_model_replaces_projections_and_head_only(tiny_model_dir):
    engine = load_engine(str(tiny_model_dir), device="cpu", quantize="int8")
    model = engine.model
    cfg = model.config
    int8 = [n for n, m in model.named_modules() if isinstance(m, Int8Linear)]
    assert len(int8) == len(PROJECTIONS) * cfg.num_hidden_layers + 1 and "lm_head" in int8
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    # The tied embedding is looked up from the int8 head's rows: no float table of its own.
    emb = model.model.embed_tokens
    assert isinstance(emb, Int8Embedding) and emb.head is model.lm_head and not list(emb.parameters())
    assert "model.embed_tokens.weight" not in model.state_dict() and model.dtype == torch.float32
    assert engine.identity.quantize == "int8" and model.lm_head.exact_top == 64
    assert model.model.layers[0].mlp.up_proj.exact_top == 0
    assert engine.identity.parameters == load_engine(str(tiny_model_dir), device="cpu").identity.parameters
    assert quantize_model(model, "int8") == 0  # nothing left to quantise; "none" does nothing either


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])  # tied head; q/k/v bias; q/k norms
def test_int8_model_computes_with_its_int8_weights(tiny_family_dirs, family):
    d = str(tiny_family_dirs(family))
    q = load_engine(d, device="cpu", quantize="int8").model
    ref = load_engine(d, device="cpu").model
    _dequantised_float(ref)
    with torch.no_grad():
        want = ref(IDS).float()
        assert IDS.numel() > KERNEL_MAX_ROWS
        assert _rel(q(IDS).float(), want) <= PREFILL_TOL  # prefill: dense matmul on Q*s
    dec = _decode(q)
    assert _rel(dec, want) <= DECODE_TOL  # decode: the int8 kernel, bfloat16 activations
    assert (dec.argmax(-1) == want.argmax(-1)).float().mean() >= 0.9


def test_bfloat16_model_with_int8_weights(tiny_model_dir):
    q = load_engine(str(tiny_model_dir), device="cpu", dtype="bfloat16", quantize="int8").model
    ref = load_engine(str(tiny_model_dir), device="cpu").model
    _dequantised_float(ref)
    assert q.lm_head.dtype == torch.bfloat16 and q.lm_head.qweight.dtype == torch.int8
    # A bfloat16 residual stream adds bfloat16's own error (a plain bfloat16 model is ~6 % off here).
    assert _rel(_decode(q), _decode(ref)) <= 0.15


def test_moving_an_int8_model_keeps_int8_weights(tiny_model_dir):
    model = load_engine(str(tiny_model_dir), device="cpu", quantize="int8").model
    model.to(torch.bfloat16)
    head = model.lm_head
    assert head.qweight.dtype == torch.int8 and head.scales.dtype == torch.bfloat16 and head.dtype == torch.bfloat16
    assert model(IDS[:, :3]).dtype == torch.bfloat16


def test_lora_on_int8_layers_adds_the_float_low_rank_term(tiny_model_dir, tmp_path):
    pm = peft_model(tiny_model_dir, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj", "gate_proj"])
    path = save_peft(pm, tmp_path / "ad")
    f = load_engine(str(tiny_model_dir), device="cpu")
    q = load_engine(str(tiny_model_dir), device="cpu", quantize="int8")
    f_base, q_base = logits(f.model), logits(q.model)
    f.adapters.load(path)
    info = q.adapters.load(path)
    f_delta, q_delta = logits(f.model) - f_base, logits(q.model) - q_base
    assert f_delta.abs().max() > 1.0  # the adapter really changes the answer
    # The side path is the same float product on both; only the int8 base differs.
    assert _rel(q_delta, f_delta) <= 0.2
    a = q.model.model.layers[0].self_attn.q_proj.lora[info.name].A
    assert a.dtype == torch.float32
    q.adapters.unload(info.name)
    assert torch.equal(logits(q.model), q_base)  # unloading restores the int8 model exactly


def test_merging_into_int8_weights_is_refused_and_changes_nothing(tiny_model_dir, tmp_path):
    path = save_peft(peft_model(tiny_model_dir, r=4, target_modules=["q_proj", "o_proj"]), tmp_path / "ad")
    q = load_engine(str(tiny_model_dir), device="cpu", quantize="int8")
    info = q.adapters.load(path)
    before = logits(q.model)
    version = q.adapters.weights_version()
    with pytest.raises(AdapterError) as e:
        q.adapters.merge(info.name)
    msg = str(e.value)
    assert "\n" not in msg and "int8" in msg and "without --quantize" in msg
    assert torch.equal(logits(q.model), before) and q.adapters.weights_version() == version
    assert not q.adapters.info(info.name).merged


def test_fine_tuning_an_int8_model_is_refused(tiny_model_dir):
    from chatcli_finetune.trainable import LoRASpec, attach_trainable

    engine = load_engine(str(tiny_model_dir), device="cpu", quantize="int8")
    with pytest.raises(UsageError, match="without --quantize"):
        attach_trainable(engine.adapters, LoRASpec(), seed=0)
    assert not engine.adapters.names


def test_bad_quantize_value_is_a_one_line_error(capsys, tiny_model_dir):
    code, out, err = run(capsys, "generate", "hi", "--model", str(tiny_model_dir), "--quantize", "int3")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "invalid --quantize 'int3'" in err and "none, int8 or int4" in err
    with pytest.raises(UsageError, match="none, int8 or int4"):
        load_engine(str(tiny_model_dir), quantize="fp8")


def test_generate_quantize_int8_end_to_end(capsys, tiny_model_dir):
    args = ("generate", "Paris is", "--model", str(tiny_model_dir), "--json", "-n", "6", "--temperature", "0")
    code, out, err = run(capsys, *args, "--quantize", "int8")
    assert code == 0, err
    objs = jsonl(out)
    assert objs[0]["type"] == "meta" and objs[0]["quantize"] == "int8"
    steps = [o for o in objs if o["type"] == "step"]
    assert objs[-1]["type"] == "done" and len(steps) == objs[-1]["completion_tokens"] > 0
    assert all(0 < s["model_prob"] <= 1 for s in steps)
    code, out, _ = run(capsys, *args, "--quantize", "none")
    assert code == 0 and jsonl(out)[0]["quantize"] == "none"


def test_fused_int8_groups_match_the_modules_one_by_one(tiny_family_dirs):
    model = load_engine(str(tiny_family_dirs("qwen2")), device="cpu", quantize="int8").model  # q/k/v bias
    attn = model.model.layers[0].self_attn
    group = attn.qkv_group
    assert group is not None and group.names == ("q_proj", "k_proj", "v_proj")
    assert attn.k_proj.qweight.data_ptr() == group.fused.qweight[group.starts[1]].data_ptr()  # a view, no copy
    x = torch.randn(1, 3, model.config.hidden_size)
    with torch.no_grad():
        fused = group.run(attn, x)
        alone = [attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)]
    for a, b in zip(fused, alone):
        assert torch.equal(a, b)
    attn.k_proj = Int8Linear.from_linear(nn.Linear(model.config.hidden_size, alone[1].shape[-1]))
    assert group.run(attn, x) is None  # a replaced member: the caller calls the modules
