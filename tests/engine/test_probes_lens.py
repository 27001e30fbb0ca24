"""The logit lens against transformers (the oracle), for every tiny family, packed and unpacked,
with a LoRA adapter (PEFT as the oracle), int8 and bfloat16.

The oracle: ``output_hidden_states`` gives the embeddings and each block's output;
entries 0..L-1 go through HF's own ``model.norm`` and ``lm_head``. Its last entry is
already normed (transformers ties it to ``last_hidden_state``), so the last layer is
compared with HF's logits instead of being normed a second time.
"""

from __future__ import annotations

import pytest
import torch

from chatcli.engine.probes.capture import reading_inputs
from chatcli.engine.probes.lens import LensLayer, LensResult, LensToken, layer_logits, logit_lens
from chatcli.engine.sampling import raw_with_entropy
from chatcli.errors import UsageError
from chatcli.hub.checkpoint import load_checkpoint
from chatcli.lora.manager import AdapterManager
from chatcli.model.quantize import quantize_model
from chatcli.tokenizer.tokenizer import ChatTokenizer
from tests.lora_helpers import peft_model, save_peft
from tests.tiny import FAMILIES, load_hf_oracle

TOL = 1e-3  # per probability, float32 (the bound; measured differences are ~1e-6)
IDS = [1, 5, 77, 300, 12, 9, 240, 33, 2, 18, 61, 150]


@torch.no_grad()
def hf_lens(hf, ids: list[int], position: int) -> torch.Tensor:
    """Probabilities [L + 1, V] from transformers' hidden states through its norm and head."""
    out = hf(torch.tensor([ids[: position + 1]]), output_hidden_states=True)
    base = hf.get_base_model() if hasattr(hf, "get_base_model") else hf
    hs = out.hidden_states
    inner = [base.lm_head(base.model.norm(h[0, -1])) for h in hs[:-1]]
    return torch.softmax(torch.stack(inner + [out.logits[0, -1]]).float(), dim=-1)


def ours(model, ids: list[int], position: int) -> torch.Tensor:
    return torch.softmax(layer_logits(model, ids, position).float(), dim=-1)


@pytest.mark.parametrize("pack", [True, False], ids=["packed", "unpacked"])
@pytest.mark.parametrize("family", FAMILIES)
def test_lens_matches_transformers(tiny_family_dirs, family, pack):
    d = tiny_family_dirs(family)
    model, hf = load_checkpoint(d, pack=pack), load_hf_oracle(d)
    for position in (len(IDS) - 1, 4):
        ref = hf_lens(hf, IDS, position)
        assert ref.shape[0] == model.config.num_hidden_layers + 1
        assert (ours(model, IDS, position) - ref).abs().max().item() <= TOL
        # The public result: the same top tokens and probabilities, layer by layer.
        result = logit_lens(model, IDS, position=position, top_n=5)
        assert result.position == position and [la.layer for la in result.layers] == list(range(len(ref)))
        for layer, want in zip(result.layers, ref):
            assert [t.id for t in layer.top] == want.topk(5).indices.tolist()
            assert all(abs(t.prob - float(want[t.id])) <= TOL for t in layer.top)
            assert layer.target_prob == pytest.approx(float(want[result.target_id]), abs=TOL)
            entropy = float(-(want * want.log()).nan_to_num().sum() / torch.log(torch.tensor(2.0)))
            assert layer.entropy == pytest.approx(entropy, abs=1e-2)


@pytest.mark.parametrize("family", FAMILIES)
def test_last_layer_is_the_models_own_distribution_exactly(tiny_family_dirs, family):
    model = load_checkpoint(tiny_family_dirs(family))
    result = logit_lens(model, IDS, top_n=3)
    with torch.no_grad():
        own, _ = raw_with_entropy(model(torch.tensor([IDS]), last_only=True)[0, -1])
    last = result.layers[-1]
    assert [t.prob for t in last.top] == own.topk(3).values.tolist()
    assert result.target_id == int(own.argmax())  # the default target: the model's own top-1
    assert last.target_prob == float(own.max())


def test_last_layer_matches_the_step_generation_gave(tiny_model_dir):
    from chatcli.engine.events import Step
    from chatcli.engine.loader import load_engine
    from chatcli.engine.params import SamplingParams

    engine = load_engine(str(tiny_model_dir), device="cpu", warm_up=False)
    ids = engine.completion_ids("The quick brown fox")
    step = next(e for e in engine.complete("The quick brown fox", SamplingParams(temperature=0, max_tokens=1, top_n=5))
                if isinstance(e, Step))
    result = logit_lens(engine.model, ids, top_n=5, target_id=step.id, tokenizer=engine.tokenizer)
    last = result.layers[-1]
    assert [t.id for t in last.top] == [t.id for t in step.top]
    assert [t.prob for t in last.top] == pytest.approx([t.model_prob for t in step.top], abs=1e-6)
    assert last.entropy == pytest.approx(step.entropy, abs=1e-5)
    assert result.target_token == step.token


LORA_CASES = {
    "all-linear": dict(r=4, lora_alpha=8, target_modules="all-linear"),
    "head": dict(r=4, lora_alpha=8, target_modules=["v_proj", "lm_head"]),  # the readout head is adapted too
}


@pytest.mark.parametrize("pack", [True, False], ids=["packed", "unpacked"])
@pytest.mark.parametrize("case", list(LORA_CASES))
@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_lens_reads_the_adapted_model(tmp_path, tiny_family_dirs, family, case, pack):
    d = tiny_family_dirs(family)
    pm = peft_model(d, **LORA_CASES[case])
    adapter = save_peft(pm, tmp_path / "ad")
    model = load_checkpoint(d, pack=pack)
    base = ours(model, IDS, len(IDS) - 1)
    AdapterManager(model).load(adapter, name="a")
    got = ours(model, IDS, len(IDS) - 1)
    assert (got - base).abs().max().item() > 1e-2, "the adapter must change the lens"
    assert (got - hf_lens(pm, IDS, len(IDS) - 1)).abs().max().item() <= TOL


def test_int8_last_layer_is_its_own_distribution_and_inner_layers_follow_the_weights(tiny_model_dir):
    plain, q8 = load_checkpoint(tiny_model_dir), load_checkpoint(tiny_model_dir)
    quantize_model(q8, "int8")
    got = ours(q8, IDS, len(IDS) - 1)
    with torch.no_grad():
        own = torch.softmax(q8(torch.tensor([IDS]), last_only=True)[0, -1].float(), -1)
    assert torch.equal(got[-1], own)
    # int8 weights move these chaotic tiny models by a few percent (tests/model/test_quantize.py);
    # the lens must follow the int8 model, not fail or read float weights elsewhere.
    assert (got - ours(plain, IDS, len(IDS) - 1)).abs().max().item() < 0.15


def test_bfloat16_reads_out_in_float32_and_ends_on_its_own_distribution(tiny_model_dir):
    f32, bf16 = load_checkpoint(tiny_model_dir), load_checkpoint(tiny_model_dir, dtype=torch.bfloat16)
    result = logit_lens(bf16, IDS, top_n=3)
    with torch.no_grad():
        own, _ = raw_with_entropy(bf16(torch.tensor([IDS]), last_only=True)[0, -1])
    assert [t.prob for t in result.layers[-1].top] == own.topk(3).values.tolist()
    got = ours(bf16, IDS, len(IDS) - 1)
    assert got.dtype == torch.float32 and torch.allclose(got.sum(-1), torch.ones(len(got)), atol=1e-5)
    assert (got - ours(f32, IDS, len(IDS) - 1)).abs().max().item() < 0.1  # bf16 rounding of a chaotic model


def test_token_texts_target_and_json(tiny_model_dir):
    model, tokenizer = load_checkpoint(tiny_model_dir), ChatTokenizer.from_dir(tiny_model_dir)
    target = 77
    result = logit_lens(model, IDS, top_n=4, target_id=target, tokenizer=tokenizer)
    assert result.target_id == target and result.target_token == tokenizer.token_text(target)
    assert result.layers[0].top[0].token == tokenizer.token_text(result.layers[0].top[0].id)
    data = result.to_json()
    assert data["type"] == "lens" and data["position"] == len(IDS) - 1
    assert [la["layer"] for la in data["layers"]] == list(range(model.config.num_hidden_layers + 1))
    assert set(data["layers"][0]["top"][0]) == {"id", "token", "prob"} and len(data["layers"][0]["top"]) == 4
    # Without a tokenizer the texts are the ids.
    assert logit_lens(model, IDS, top_n=1).layers[0].top[0].token.startswith("<")


def _layer(n: int, top_id: int, p: float) -> LensLayer:
    return LensLayer(n, (LensToken(top_id, "x", 0.9),), 1.0, p)


def test_first_top_and_settled_layers():
    r = LensResult(3, (_layer(0, 9, 0.0), _layer(1, 7, 0.6), _layer(2, 9, 0.4), _layer(3, 7, 0.7), _layer(4, 7, 0.9)),
                   target_id=7, target_token="x")
    assert r.first_top_layer() == 1
    assert r.settled_layer() == 3  # above 0.5 at layer 1 too, but it fell back at layer 2
    assert r.settled_layer(0.8) == 4 and r.settled_layer(0.95) is None
    never = LensResult(0, (_layer(0, 9, 0.1),), target_id=7, target_token="x")
    assert never.first_top_layer() is None and never.settled_layer() is None


def test_bad_requests_are_one_line_usage_errors(tiny_model_dir):
    model = load_checkpoint(tiny_model_dir)
    with pytest.raises(UsageError, match="no tokens"):
        logit_lens(model, [])
    with pytest.raises(UsageError, match=r"outside the text: use 0\.\.11"):
        logit_lens(model, IDS, position=12)
    with pytest.raises(UsageError, match="outside the text"):
        logit_lens(model, IDS, position=-13)
    with pytest.raises(UsageError, match="at least 1"):
        logit_lens(model, IDS, top_n=0)
    with pytest.raises(UsageError, match="vocabulary"):
        logit_lens(model, IDS, target_id=10**9)


def test_no_hook_stays_behind_and_generation_is_unchanged(tiny_model_dir):
    model = load_checkpoint(tiny_model_dir)
    x = torch.tensor([IDS])
    with torch.no_grad():
        before = model(x)
    logit_lens(model, IDS)
    with pytest.raises(UsageError):
        logit_lens(model, IDS, position=99)
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_reading_inputs_ignores_other_threads_and_cleans_up_after_an_error(tiny_model_dir):
    import threading

    model = load_checkpoint(tiny_model_dir)
    seen: list[int] = []
    layers = model.model.layers
    with reading_inputs(layers, lambda i, args: seen.append(i)):
        worker = threading.Thread(target=lambda: model(torch.tensor([IDS])))
        worker.start()
        worker.join()
        assert seen == []  # a generation on another thread is not recorded
        with torch.no_grad():
            model(torch.tensor([IDS[:3]]))
        assert seen == list(range(len(layers)))
    with pytest.raises(RuntimeError):
        with reading_inputs(layers, lambda i, args: None):
            raise RuntimeError("boom")
    assert all(not m._forward_pre_hooks for m in model.modules())
