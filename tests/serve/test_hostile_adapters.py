"""A broken adapter given to POST /v1/load_lora_adapter is a 400 with a one-line reason, and the
served model and the adapters already loaded answer exactly as before."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.lora_helpers import peft_model, save_peft
from tests.serve_support import HELLO, MODEL_ID, greedy, reference, served, tiny_engine


def _broken(root, name: str, config: bytes | None, weights: bytes | None):
    folder = root / name
    folder.mkdir()
    if config is not None:
        (folder / "adapter_config.json").write_bytes(config)
    if weights is not None:
        (folder / "adapter_model.safetensors").write_bytes(weights)


@pytest.fixture(scope="module")
def folders(tiny_model_dir, tmp_path_factory):
    """The allowed folder: a good adapter 'ad' and broken ones named after what is wrong."""
    root = tmp_path_factory.mktemp("hostile_adapters")
    good = save_peft(peft_model(tiny_model_dir, seed=3, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]), root / "ad")
    config = json.loads((good / "adapter_config.json").read_text())
    weights = (good / "adapter_model.safetensors").read_bytes()

    def cfg(**change) -> bytes:
        return json.dumps({**config, **change}).encode()

    _broken(root, "garbage_weights", cfg(), b"not a safetensors file")
    _broken(root, "truncated_weights", cfg(), weights[: len(weights) // 2])
    _broken(root, "config_not_utf8", '{"r": 4, "x": "é"}'.encode("latin-1"), weights)
    _broken(root, "config_a_list", b"[1, 2]", weights)
    _broken(root, "config_nested_100000_deep", b'{"r": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", weights)
    _broken(root, "target_modules_a_number", cfg(target_modules=5), weights)
    _broken(root, "rank_pattern_a_list", cfg(rank_pattern=[1]), weights)
    _broken(root, "rank_zero", cfg(r=0), weights)
    _broken(root, "no_weights", cfg(), None)
    return root


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return tiny_engine(tiny_model_dir)


@pytest.fixture(scope="module")
def server(engine, folders):
    with served(engine, adapter_dirs=[folders]) as s:
        with httpx.Client(base_url=s.base_url, timeout=60) as http:
            assert http.post("/load_lora_adapter", json={"lora_name": "ad", "lora_path": "ad"}).status_code == 200
        yield s


@pytest.fixture(scope="module")
def refs(tiny_model_dir, folders):
    engine = tiny_engine(tiny_model_dir)
    _, base = reference(engine.chat(HELLO, greedy(8)))
    engine.adapters.load(folders / "ad", name="ad")
    _, tuned = reference(engine.chat(HELLO, greedy(8)))
    assert tuned.text != base.text
    return {MODEL_ID: base.text, "ad": tuned.text}


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.base_url, timeout=60) as c:
        yield c


def _unchanged(http: httpx.Client, refs: dict) -> None:
    assert [m["id"] for m in http.get("/models").json()["data"]] == [MODEL_ID, "ad"]
    for model, text in refs.items():
        r = http.post("/chat/completions", json={"model": model, "messages": HELLO, "temperature": 0, "max_tokens": 8})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == text


def _refused(r: httpx.Response) -> dict:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == "lora_path"
    assert err["message"] and "\n" not in err["message"] and "Traceback" not in err["message"]
    return err


BROKEN = ["garbage_weights", "truncated_weights", "config_not_utf8", "config_a_list", "config_nested_100000_deep",
          "target_modules_a_number", "rank_pattern_a_list", "rank_zero", "no_weights"]  # fmt: skip


@pytest.mark.parametrize("name", BROKEN)
def test_a_broken_adapter_is_a_400_and_nothing_changes(http, refs, name):
    _refused(http.post("/load_lora_adapter", json={"lora_name": "new", "lora_path": name}))
    _unchanged(http, refs)


def test_a_failure_the_reader_did_not_foresee_is_still_a_one_line_400(http, engine, refs, folders, monkeypatch):
    def unforeseen(path, name=None, scale=1.0):
        raise KeyError("a reason\nover two lines")

    monkeypatch.setattr(engine.adapters, "load", unforeseen)
    err = _refused(http.post("/load_lora_adapter", json={"lora_name": "new", "lora_path": "ad"}))
    assert "KeyError" in err["message"] and "over two lines" in err["message"]
    monkeypatch.undo()
    _unchanged(http, refs)


@pytest.mark.parametrize("field, value", [("lora_name", "a\0b"), ("lora_path", "ad\0"), ("lora_path", "\ud83d"),
                                          ("lora_name", "\udc80")])  # fmt: skip
def test_nul_and_surrogates_in_adapter_fields_are_400(http, refs, field, value):
    body = {"lora_name": "new", "lora_path": "ad", field: value}
    r = http.post("/load_lora_adapter", content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == field
    _unchanged(http, refs)
