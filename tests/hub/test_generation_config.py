"""A model's sampling defaults: generation_config.json over the catalog, read as vLLM and transformers do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from chatcli.engine.loader import load_engine
from chatcli.engine.params import SamplingParams
from chatcli.engine.protocol import model_sampling
from chatcli.hub import catalog
from chatcli.hub.generation_config import read_generation_defaults
from chatcli.paths import models_dir


def _with_generation_config(src: Path, dest: Path, gen: dict) -> Path:
    shutil.copytree(src, dest)
    (dest / "generation_config.json").write_text(json.dumps(gen))
    return dest


# Qwen3-0.6B's generation_config.json, as the Hub ships it.
QWEN3_GEN = {"bos_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643], "pad_token_id": 151643,
             "temperature": 0.6, "top_k": 20, "top_p": 0.95, "transformers_version": "4.51.0"}


def test_reads_only_the_keys_present(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps(QWEN3_GEN))
    d = read_generation_defaults(tmp_path)
    assert d.sampling == {"temperature": 0.6, "top_k": 20, "top_p": 0.95}  # no min_p, no repetition_penalty
    assert set(d.origins.values()) == {"generation_config.json"}
    assert d.eos_ids == (151645, 151643)
    assert d.problems == ()
    SamplingParams(**d.sampling)  # what the engine will be given is valid


def test_do_sample_false_means_greedy(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps({"do_sample": False, "temperature": 0.6, "top_p": 0.9}))
    d = read_generation_defaults(tmp_path)
    assert d.sampling["temperature"] == 0.0 and d.sampling["top_p"] == 0.9


def test_absent_or_unreadable_file_gives_nothing(tmp_path):
    assert read_generation_defaults(tmp_path).sampling == {}
    (tmp_path / "generation_config.json").write_text("{not json")
    assert read_generation_defaults(tmp_path).sampling == {}
    (tmp_path / "generation_config.json").write_text("[1, 2]")
    assert read_generation_defaults(tmp_path).sampling == {}


def test_bad_values_are_left_out_and_named(tmp_path):
    gen = {"temperature": -1, "top_p": 0.8, "top_k": "many", "min_p": 2, "repetition_penalty": True}
    (tmp_path / "generation_config.json").write_text(json.dumps(gen))
    d = read_generation_defaults(tmp_path)
    assert d.sampling == {"top_p": 0.8}
    assert [p.split()[0] for p in d.problems] == ["temperature", "top_k", "min_p", "repetition_penalty"]
    assert "use a number >= 0" in d.problems[0]


def test_vllm_top_k_minus_one_is_off(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps({"top_k": -1}))
    assert read_generation_defaults(tmp_path).sampling == {"top_k": 0}


def test_file_wins_over_the_catalog_recommendation(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps({"top_p": 0.8}))
    d = read_generation_defaults(tmp_path, {"temperature": 0.2, "top_p": 0.9})
    assert d.sampling == {"temperature": 0.2, "top_p": 0.8}
    assert d.origins == {"temperature": "catalog", "top_p": "generation_config.json"}


def test_default_model_recommends_its_cards_values():
    assert catalog.KNOWN_MODELS[catalog.DEFAULT_MODEL].sampling == {"temperature": 0.2, "top_p": 0.9}


def test_loaded_model_carries_the_checkpoints_defaults(tiny_model_dir, tmp_path):
    model_dir = _with_generation_config(tiny_model_dir, tmp_path / "m", {**QWEN3_GEN, "eos_token_id": [2]})
    engine = load_engine(str(model_dir), warm_up=False)
    assert model_sampling(engine) == {"temperature": 0.6, "top_k": 20, "top_p": 0.95}


def test_a_tiny_checkpoint_without_sampling_keys_has_none(tiny_model_dir):
    engine = load_engine(str(tiny_model_dir), warm_up=False)
    assert model_sampling(engine) == {}
    assert model_sampling(object()) == {}  # an engine that declares none (a remote server)


def test_known_model_gets_the_catalog_values_under_the_file(tiny_model_dir, monkeypatch):
    """A cache entry of a known name gets its recommendation, by name and by path; the file's keys win."""
    name = "tiny-known"
    known = catalog.KnownModel(name, "", "fake", "0", "fake.whl", "0" * 64, "fake/tiny.gguf",
                               sampling={"temperature": 0.2, "top_p": 0.9})
    monkeypatch.setitem(catalog.KNOWN_MODELS, name, known)
    dest = _with_generation_config(tiny_model_dir, models_dir() / name, {"eos_token_id": 2, "top_p": 0.5})
    monkeypatch.setattr(catalog, "verify_model_dir", lambda path: [])
    assert model_sampling(load_engine(name, warm_up=False)) == {"temperature": 0.2, "top_p": 0.5}
    assert catalog.recommended_sampling(str(dest), dest) == {"temperature": 0.2, "top_p": 0.9}
    assert catalog.recommended_sampling(str(tiny_model_dir), tiny_model_dir) == {}


def test_generation_config_eos_list_stops_the_engine(tiny_model_dir, tmp_path):
    """An id in generation_config's eos list ends the answer, as transformers' generate() stops on it."""
    plain = load_engine(str(tiny_model_dir), warm_up=False)
    greedy = SamplingParams(temperature=0, max_tokens=12, seed=0)
    steps = [e for e in plain.complete("hello world", greedy) if hasattr(e, "id")]
    assert len(steps) == 12  # the tiny model's greedy answer runs to max_tokens
    stop_at = next(i for i in range(3, 12) if steps[i].id not in {s.id for s in steps[:i]})
    stop_id = steps[stop_at].id
    model_dir = _with_generation_config(tiny_model_dir, tmp_path / "m", {"eos_token_id": [2, stop_id]})
    engine = load_engine(str(model_dir), warm_up=False)
    assert stop_id in engine.generation_defaults.eos_ids
    events = list(engine.complete("hello world", greedy))
    done = events[-1]
    assert done.finish_reason == "stop"
    assert [e.id for e in events[:-1] if hasattr(e, "id")] == [s.id for s in steps[:stop_at]]
