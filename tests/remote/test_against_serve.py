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
