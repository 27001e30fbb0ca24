"""Adapters through vLLM's /v1/load_lora_adapter and /v1/unload_lora_adapter: names, per-request
selection interleaved with the base model, and the allowed-folder restriction."""

from __future__ import annotations

import os
import threading

import openai
import pytest

from tests.lora_helpers import peft_model, save_peft
from tests.serve_support import HELLO, MODEL_ID, client, greedy, post, reference, served, tiny_engine


@pytest.fixture(scope="module")
def folders(tiny_model_dir, tmp_path_factory):
    """(allowed folder with adapter 'ad', an adapter outside it, a symlink inside pointing outside)."""
    root = tmp_path_factory.mktemp("serve_adapters")
    allowed, outside = root / "allowed", root / "outside"
    save_peft(peft_model(tiny_model_dir, seed=3, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]), allowed / "ad")
    save_peft(peft_model(tiny_model_dir, seed=4, r=4, lora_alpha=8, target_modules=["q_proj"]), outside / "other")
    os.symlink(outside / "other", allowed / "sneaky")
    return allowed, outside


@pytest.fixture(scope="module")
def server(tiny_model_dir, folders):
    with served(tiny_engine(tiny_model_dir), adapter_dirs=[folders[0]]) as s:
        yield s


@pytest.fixture(scope="module")
def refs(tiny_model_dir, folders):
    """Greedy reference answers: base, and with the adapter on (a separate engine)."""
    engine = tiny_engine(tiny_model_dir)
    _, base = reference(engine.chat(HELLO, greedy(10)))
    engine.adapters.load(folders[0] / "ad", name="ad")
    _, tuned = reference(engine.chat(HELLO, greedy(10)))
    assert tuned.text != base.text  # the adapter changes the answer, so a mix-up would show
    return {MODEL_ID: base.text, "ad": tuned.text}


def answer(server, model: str) -> str:
    r = client(server).chat.completions.create(model=model, messages=HELLO, temperature=0, max_tokens=10)
    return r.choices[0].message.content


def test_load_select_interleave_unload(server, folders, refs):
    status, body = post(server, "/load_lora_adapter", {"lora_name": "ad", "lora_path": str(folders[0] / "ad")})
    assert status == 200 and "ad" in body
    models = {m.id: m for m in client(server).models.list().data}
    assert set(models) == {MODEL_ID, "ad"} and models["ad"].parent == MODEL_ID

    # Adapter and base requests, alternating and concurrent: each gets its own weights.
    order = [MODEL_ID, "ad", "ad", MODEL_ID, "ad", MODEL_ID]
    got: dict[int, str] = {}
    threads = [threading.Thread(target=lambda i=i, m=m: got.__setitem__(i, answer(server, m))) for i, m in enumerate(order)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [got[i] for i in range(len(order))] == [refs[m] for m in order]

    status, body = post(server, "/load_lora_adapter", {"lora_name": "ad", "lora_path": "ad"})
    assert status == 400 and "already" in body["error"]["message"]
    status, _ = post(server, "/unload_lora_adapter", {"lora_name": "ad"})
    assert status == 200
    assert [m.id for m in client(server).models.list().data] == [MODEL_ID]
    with pytest.raises(openai.NotFoundError):
        answer(server, "ad")
    status, body = post(server, "/unload_lora_adapter", {"lora_name": "ad"})
    assert status == 404 and body["error"]["param"] == "lora_name"
    assert answer(server, MODEL_ID) == refs[MODEL_ID]


def test_a_bare_name_resolves_inside_the_allowed_folder(server, refs):
    status, _ = post(server, "/load_lora_adapter", {"lora_name": "by-name", "lora_path": "ad"})
    assert status == 200
    try:
        assert answer(server, "by-name") == refs["ad"]
    finally:
        post(server, "/unload_lora_adapter", {"lora_name": "by-name"})


@pytest.mark.parametrize("where", ["outside", "dotdot", "symlink", "missing"])
def test_paths_outside_the_allowed_folders_are_refused(server, folders, where):
    allowed, outside = folders
    path = {
        "outside": str(outside / "other"),
        "dotdot": "../outside/other",
        "symlink": str(allowed / "sneaky"),
        "missing": str(allowed / "nope"),
    }[where]
    status, body = post(server, "/load_lora_adapter", {"lora_name": "x", "lora_path": path})
    assert status == 400 and body["error"]["param"] == "lora_path"
    assert "--adapter-dir" in body["error"]["message"]
    assert [m.id for m in client(server).models.list().data] == [MODEL_ID]


@pytest.mark.parametrize("body", [{"lora_path": "ad"}, {"lora_name": "", "lora_path": "ad"}, {"lora_name": "ok"}])
def test_missing_fields_are_400(server, body):
    status, out = post(server, "/load_lora_adapter", body)
    assert status == 400 and out["error"]["param"] in ("lora_name", "lora_path")


def test_a_bad_adapter_name_is_400_and_loads_nothing(server):
    status, out = post(server, "/load_lora_adapter", {"lora_name": "no spaces", "lora_path": "ad"})
    assert status == 400 and "name" in out["error"]["message"]
    status, out = post(server, "/load_lora_adapter", {"lora_name": MODEL_ID, "lora_path": "ad"})
    assert status == 400
    assert [m.id for m in client(server).models.list().data] == [MODEL_ID]


def test_startup_adapters_are_names_and_off_for_the_base(tiny_model_dir, folders, refs):
    from chatcli.engine.loader import load_engine

    engine = load_engine(str(tiny_model_dir), device="cpu", lora=[str(folders[0] / "ad")])
    with served(engine, adapter_dirs=[folders[0]]) as s:
        assert [m.id for m in client(s).models.list().data] == [MODEL_ID, "ad"]
        assert answer(s, MODEL_ID) == refs[MODEL_ID]
        assert answer(s, "ad") == refs["ad"]
        assert answer(s, MODEL_ID) == refs[MODEL_ID]
