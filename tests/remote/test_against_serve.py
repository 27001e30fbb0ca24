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


def test_compare_on_chatcli_serve_scores_the_answer_shown_teacher_forced(tiny_model_dir, tmp_path):
    """chatcli serve scores a given text (vLLM's /tokenize and echo): /compare scores the answer on
    screen as the base and with the adapter; every token's probability on both sides is the local
    engine's, and the partial KL never exceeds the full KL the local engine computes."""
    from chatcli.chat.session import Node
    from chatcli.lora.compare import compare_answer
    from chatcli.remote.compare import compare_remote

    save_peft(peft_model(tiny_model_dir, seed=3, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]), tmp_path / "ad")
    local = tiny_engine(tiny_model_dir)
    # An answer that reads back as the same tokens (the random tiny model's own answers are byte soup).
    text = " Paris is the capital of France."
    pieces = [local.tokenizer.token_text(i) for i in local.tokenizer.encode(text)]
    node = Node(2, 1, "assistant", text, [Step(i, -1, p, p, 0.5, 0.5, 1.0, ()) for i, p in enumerate(pieces)])
    with served(tiny_engine(tiny_model_dir), adapter_dirs=[tmp_path]) as server:
        remote = connect(server.base_url, MODEL_ID)
        remote.adapters.load(str(tmp_path / "ad"), name="ad")
        result = compare_remote(remote, remote.adapters, list(HELLO), node, None, {"ad": 1.0})
        assert remote.text_scorer is not None  # probed once, and kept
        ids, start = remote.text_scorer.answer_ids(list(HELLO), text)
    assert ids[:start] == local.tokenizer.encode_chat(HELLO) and ids[start:] == local.tokenizer.encode(text)
    assert result.method == "teacher-forced" and result.partial and len(result.steps) == len(pieces)
    local.adapters.load(tmp_path / "ad", name="ad")
    full = compare_answer(local.model, local.adapters, ids[:start], ids[start:], top_n=5, tokenizer=local.tokenizer)
    for mine, ref in zip(result.steps, full.steps, strict=True):
        assert mine.token == ref.token
        assert mine.p_base == pytest.approx(ref.p_base, abs=1e-4)
        assert mine.p_adapter == pytest.approx(ref.p_adapter, abs=1e-4)
        assert mine.kl_bits <= ref.kl_bits + 1e-4
