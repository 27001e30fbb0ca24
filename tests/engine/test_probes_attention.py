"""Attention weights of one query against transformers' eager attention (the oracle), for every tiny
family (GQA: 4 heads over 2 kv heads; Qwen3's q/k norms), packed and unpacked, with a LoRA adapter
(PEFT as the oracle), and the result's averaging, ranking and JSON."""

from __future__ import annotations

import pytest
import torch

from chatcli.engine.probes.attention import AttentionResult, attention_weights
from chatcli.errors import UsageError
from chatcli.hub.checkpoint import load_checkpoint
from chatcli.lora.manager import AdapterManager
from chatcli.tokenizer.tokenizer import ChatTokenizer
from tests.lora_helpers import peft_model, save_peft
from tests.tiny import FAMILIES, load_hf_oracle

TOL = 1e-4  # the bound; measured differences are ~1e-6
IDS = [1, 5, 77, 300, 12, 9, 240, 33, 2, 18, 61, 150]


@torch.no_grad()
def hf_rows(hf, ids: list[int], position: int) -> torch.Tensor:
    """Eager attention weights [L, H, position + 1] of the query at ``position``."""
    out = hf(torch.tensor([ids]), output_attentions=True)
    return torch.stack([a[0, :, position, : position + 1] for a in out.attentions]).float()


def eager(hf):
    hf.set_attn_implementation("eager")  # output_attentions needs the eager weights
    return hf


@pytest.mark.parametrize("pack", [True, False], ids=["packed", "unpacked"])
@pytest.mark.parametrize("family", FAMILIES)
def test_weights_match_transformers_eager(tiny_family_dirs, family, pack):
    d = tiny_family_dirs(family)
    model, hf = load_checkpoint(d, pack=pack), eager(load_hf_oracle(d))
    for position in (len(IDS) - 1, 5, 0):
        result = attention_weights(model, IDS, position=position)
        ref = hf_rows(hf, IDS, position)
        assert result.weights.shape == ref.shape == (
            model.config.num_hidden_layers, model.config.num_attention_heads, position + 1)
        assert result.weights.dtype == torch.float32
        assert (result.weights - ref).abs().max().item() <= TOL
    # The query at position 0 can only look at itself.
    assert torch.equal(attention_weights(model, IDS, position=0).weights, torch.ones(ref.shape[0], ref.shape[1], 1))


@pytest.mark.parametrize("pack", [True, False], ids=["packed", "unpacked"])
@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_weights_of_the_adapted_model_match_peft(tmp_path, tiny_family_dirs, family, pack):
    d = tiny_family_dirs(family)
    pm = peft_model(d, r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "o_proj", "up_proj"])
    eager(pm.get_base_model())
    adapter = save_peft(pm, tmp_path / "ad")
    model = load_checkpoint(d, pack=pack)
    base = attention_weights(model, IDS).weights
    AdapterManager(model).load(adapter, name="a")
    got = attention_weights(model, IDS).weights
    assert (got - base).abs().max().item() > 1e-2, "the adapter must change the weights"
    assert (got - hf_rows(pm, IDS, len(IDS) - 1)).abs().max().item() <= TOL


def test_bfloat16_weights_are_float32_rows_close_to_the_float_model(tiny_model_dir):
    f32, bf16 = load_checkpoint(tiny_model_dir), load_checkpoint(tiny_model_dir, dtype=torch.bfloat16)
    got = attention_weights(bf16, IDS).weights
    assert got.dtype == torch.float32
    assert torch.allclose(got.sum(-1), torch.ones(got.shape[:2]), atol=1e-5)
    assert (got - attention_weights(f32, IDS).weights).abs().max().item() < 0.1


def test_int8_model_is_read(tiny_model_dir):
    from chatcli.model.quantize import quantize_model

    model = load_checkpoint(tiny_model_dir)
    quantize_model(model, "int8")
    got = attention_weights(model, IDS).weights
    assert torch.allclose(got.sum(-1), torch.ones(got.shape[:2]), atol=1e-5)


def test_rows_tokens_top_and_json(tiny_model_dir):
    model, tokenizer = load_checkpoint(tiny_model_dir), ChatTokenizer.from_dir(tiny_model_dir)
    result = attention_weights(model, IDS, position=-2, tokenizer=tokenizer)
    w = result.weights
    assert result.position == len(IDS) - 2 and result.ids == tuple(IDS[:-1])
    assert result.tokens == tuple(tokenizer.token_text(i) for i in IDS[:-1])
    assert result.row() == pytest.approx(w.mean(dim=(0, 1)).tolist())
    assert result.row(layer=1) == pytest.approx(w[1].mean(0).tolist())
    assert result.row(head=3) == pytest.approx(w[:, 3].mean(0).tolist())
    assert result.row(layer=0, head=2) == pytest.approx(w[0, 2].tolist())
    assert sum(result.row()) == pytest.approx(1.0)
    top = result.top(3, layer=0, head=2)
    assert [j for j, _ in top] == w[0, 2].topk(3).indices.tolist()
    assert all(a[1] >= b[1] for a, b in zip(top, top[1:]))
    data = result.to_json(layer=1)
    assert data["type"] == "attention" and data["layer"] == 1 and data["head"] is None
    assert data["layers"] == 2 and data["heads"] == 4 and data["token"] == result.tokens[-1]
    assert [x["index"] for x in data["weights"]] == list(range(len(IDS) - 1))
    assert [x["id"] for x in data["weights"]] == IDS[:-1]


def test_bad_layer_head_and_position_name_the_valid_range(tiny_model_dir):
    model = load_checkpoint(tiny_model_dir)
    result = attention_weights(model, IDS)
    with pytest.raises(UsageError, match=r"no layer 2: this model's layers are 0\.\.1"):
        result.row(layer=2)
    with pytest.raises(UsageError, match=r"no head -1: this model's heads are 0\.\.3"):
        result.top(3, head=-1)
    with pytest.raises(UsageError, match=r"outside the text: use 0\.\.11"):
        attention_weights(model, IDS, position=12)
    with pytest.raises(UsageError, match="no tokens"):
        attention_weights(model, [])


def test_no_hook_stays_behind(tiny_model_dir):
    model = load_checkpoint(tiny_model_dir)
    with torch.no_grad():
        before = model(torch.tensor([IDS]))
    attention_weights(model, IDS)
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(torch.tensor([IDS])), before)


def test_result_from_given_weights():
    r = AttentionResult(position=2, tokens=("a", "b", "c"), weights=torch.tensor([[[0.5, 0.2, 0.3]]]))
    assert r.top(2) == [(0, 0.5), (2, pytest.approx(0.3))]
    assert "id" not in r.to_json()["weights"][0]  # no ids given, none invented
