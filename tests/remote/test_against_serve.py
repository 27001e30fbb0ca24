"""chatcli's remote backend against ``chatcli serve`` on loopback: the same greedy answer as the local
engine (tokens, model_prob within 1e-4, alternatives), and adapters through vLLM's endpoints."""

from __future__ import annotations

import pytest

from chatcli.engine.events import Done, Step
from chatcli.remote import connect
from tests.lora_helpers import peft_model, save_peft
from tests.serve_support import HELLO, MODEL_ID, greedy, reference, served, tiny_engine


def remote_answer(engine, messages, params) -> tuple[list[Step], Done]:
    events = list(engine.chat(messages, params))
    return [e for e in events if isinstance(e, Step)], events[-1]


def test_remote_greedy_answer_matches_the_local_engine(tiny_model_dir):
    local = tiny_engine(tiny_model_dir)
    params = greedy(12, top_n=4)
    steps, done = reference(local.chat(HELLO, params))
    with served(local) as server:
        remote = connect(server.base_url, MODEL_ID)
        assert remote.flavor == "chatcli" and remote.identity.context_length == local.context_length
        rsteps, rdone = remote_answer(remote, HELLO, params)
    assert rdone.finish_reason == done.finish_reason and rdone.text == done.text
    assert [s.token for s in rsteps] == [s.token for s in steps]
    assert [s.model_prob for s in rsteps] == pytest.approx([s.model_prob for s in steps], abs=1e-4)
    assert [[t.token for t in s.top] for s in rsteps] == [[t.token for t in s.top] for s in steps]
    for r, s in zip(rsteps, steps):
        assert [t.model_prob for t in r.top] == pytest.approx([t.model_prob for t in s.top], abs=1e-4)
        assert r.partial and r.rank == s.rank and r.entropy <= s.entropy + 1e-6  # entropy over the top 4 only


def test_remote_adapter_control_on_chatcli_serve(tiny_model_dir, tmp_path):
    save_peft(peft_model(tiny_model_dir, seed=3, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]), tmp_path / "ad")
    local = tiny_engine(tiny_model_dir)
    _, base = reference(local.chat(HELLO, greedy(10)))
    local.adapters.load(tmp_path / "ad", name="ad")
    _, tuned = reference(local.chat(HELLO, greedy(10)))
    local.adapters.unload("ad")
    assert tuned.text != base.text
    with served(tiny_engine(tiny_model_dir), adapter_dirs=[tmp_path]) as server:
        remote = connect(server.base_url, MODEL_ID)
        control = remote.adapters
        control.load(str(tmp_path / "ad"), name="ad")
        assert control.names == ["ad"] and control.info("ad").enabled
        assert remote_answer(remote, HELLO, greedy(10))[1].text == tuned.text
        control.disable("ad")
        assert remote_answer(remote, HELLO, greedy(10))[1].text == base.text
        control.unload("ad")
        assert control.names == []


def test_compare_on_chatcli_serve_falls_back_to_greedy_answers_with_a_true_lower_bound(tiny_model_dir, tmp_path):
    """chatcli serve scores no given text (no /tokenize, no echo): the probe says so once, /compare
    compares two greedy answers, and its partial KL never exceeds the full KL the local engine computes."""
    from chatcli.chat.core import ChatCore
    from chatcli.lora.compare import compare_answer
    from chatcli.remote.compare import compare_remote

    save_peft(peft_model(tiny_model_dir, seed=3, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]), tmp_path / "ad")
    with served(tiny_engine(tiny_model_dir), adapter_dirs=[tmp_path]) as server:
        remote = connect(server.base_url, MODEL_ID)
        remote.adapters.load(str(tmp_path / "ad"), name="ad")
        core = ChatCore(remote, params=greedy(6))
        list(core.run(core.send(HELLO[0]["content"])))
        node = core.conv.leaf
        assert node.meta["adapters"] == [{"name": "ad", "scale": 1.0}]
        result = compare_remote(remote, remote.adapters, core.conv.messages(before=node), node, None, {"ad": 1.0})
        assert remote.text_scorer is None and "text_scorer" in vars(remote)  # probed, and kept
    assert result.method == "greedy" and result.partial and "2 greedy requests" in result.note
    assert result.to_json()["method"] == "greedy" and result.to_json()["partial"] is True
    local = tiny_engine(tiny_model_dir)
    first, _ = reference(local.chat(HELLO, greedy(1)))  # the base's greedy first token: step 0 of both requests
    local.adapters.load(tmp_path / "ad", name="ad")
    full = compare_answer(local.model, local.adapters, local.tokenizer.encode_chat(HELLO), [first[0].id], top_n=5)
    s0, f0 = result.steps[0], full.steps[0]
    assert s0.token == first[0].token and s0.p_base == pytest.approx(f0.p_base, abs=1e-4)
    assert s0.kl_bits <= f0.kl_bits + 1e-4
    import torch

    with torch.no_grad():  # the adapter's full distribution at step 0
        pa = torch.softmax(local.model(torch.tensor([local.tokenizer.encode_chat(HELLO)]))[0, -1].float(), -1)
    tuned, _ = reference(local.chat(HELLO, greedy(1, top_n=20)))
    ids = {t.token: t.id for step in (first[0], tuned[0]) for t in step.top}  # the tokens both sides returned
    unknown = [pair for pair in s0.top if pair.p_adapter is None]
    for pair in s0.top:  # a returned probability is the model's own; one not returned is below the floor
        if len({t.id for step in (first[0], tuned[0]) for t in step.top if t.token == pair.token}) > 1:
            continue  # two tokens with one text: the server sends no ids to tell them apart
        if pair.p_adapter is None:
            assert float(pa[ids[pair.token]]) <= s0.adapter_floor + 1e-6
        else:
            assert pair.p_adapter == pytest.approx(float(pa[ids[pair.token]]), abs=1e-4)
    assert unknown and all(pair.p_base is not None for pair in unknown)  # the base's tokens the adapter did not return
