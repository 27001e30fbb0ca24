"""Hub models download into the standard Hugging Face cache (a local fake HF_ENDPOINT) and load offline after.

The fake Hub (tests/hub/fake_hf_hub.py) answers the requests huggingface_hub makes; nothing here
reaches the network. Each test has its own empty HF_HOME (tests/conftest.py).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import pytest

from chatcli import paths
from chatcli.errors import ModelError
from chatcli.hub import catalog
from chatcli.hub.catalog import pull, resolve_model
from chatcli.hub.hf import hub_cache, hub_download
from tests.hub.fake_hf_hub import FakeRepo, serving

REPO = "someorg/tiny"


@pytest.fixture
def hub(tiny_model_dir, monkeypatch):
    with serving({REPO: FakeRepo.from_dir(tiny_model_dir)}) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


def _weights_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.suffix == ".safetensors" or p.name.endswith(".incomplete")]


def test_bare_id_downloads_into_the_hf_cache_with_progress_then_loads_offline(hub, tiny_model_dir, monkeypatch):
    seen: list[tuple[str, int, int | None]] = []
    path = resolve_model(REPO, progress=lambda s, d, t: seen.append((s, d, t)))
    cache = hub_cache.hub_cache_dir()
    assert path.parent == cache / "models--someorg--tiny" / "snapshots"
    assert (path / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()
    assert _weights_under(paths.cache_dir()) == []  # no copy in chatcli's own folders
    assert not (path / "README.md").exists()  # only what chatcli loads
    total = sum(p.stat().st_size for p in tiny_model_dir.iterdir())
    stages = {s for s, _, _ in seen}
    assert stages == {f"downloading {REPO}"} and seen[-1][1] == total
    assert {t for _, _, t in seen} == {total}  # the whole download's size from the first report on

    hub.requests.clear()
    assert resolve_model(REPO) == path and hub.requests == []  # cached: the Hub is not asked
    hub.stop()
    assert resolve_model(f"hf:{REPO}") == path  # unreachable: still fine
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model(REPO) == path


def test_a_broken_transfer_is_retried_and_leaves_nothing_half_written(hub, tiny_model_dir):
    """huggingface_hub continues after a transfer breaks off (how far back it starts is its own choice)."""
    weights = (tiny_model_dir / "model.safetensors").read_bytes()
    hub.fail_after = 1000
    path = resolve_model(REPO)
    assert len([r for r in hub.requests if r == ("GET", f"/lfs/{hashlib.sha256(weights).hexdigest()}")]) == 2
    assert (path / "model.safetensors").read_bytes() == weights
    assert list(hub_cache.repo_folder(REPO).rglob("*.incomplete")) == []


def test_gated_repo_says_how_to_log_in_and_a_token_opens_it(tiny_model_dir, monkeypatch):
    with serving({"meta/gated": FakeRepo.from_dir(tiny_model_dir, gated_token="hf_secret")}) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setenv("HF_TOKEN_PATH", str(paths.cache_dir() / "no-token"))
        with pytest.raises(ModelError) as err:
            resolve_model("meta/gated")
        msg = err.value.message
        assert "meta/gated is gated" in msg and "huggingface-cli login" in msg and "HF_TOKEN" in msg
        assert f"{fake.url}/meta/gated" in msg and "\n" not in msg
        monkeypatch.setenv("HF_TOKEN", "hf_secret")
        assert (resolve_model("meta/gated") / "config.json").is_file()


def test_unknown_repo_revision_and_unloadable_repo_are_one_line(hub, tiny_model_dir, monkeypatch):
    with pytest.raises(ModelError, match="nobody/nothing was not found on the Hub"):
        resolve_model("nobody/nothing")
    pickled = {n: b for n, b in FakeRepo.from_dir(tiny_model_dir).files.items() if n != "model.safetensors"}
    hub.repos["someorg/pickled"] = FakeRepo({**pickled, "pytorch_model.bin": b"\x80\x02pickle"})
    with pytest.raises(ModelError, match="someorg/pickled cannot be loaded by chatcli .no safetensors weights."):
        resolve_model("someorg/pickled")


def test_unreachable_hub_fails_fast_naming_the_ways_out(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    start = time.monotonic()
    with pytest.raises(ModelError) as err:
        resolve_model("Qwen/Qwen2.5-0.5B-Instruct")
    assert time.monotonic() - start < 5
    msg = err.value.message
    assert msg.startswith("Qwen/Qwen2.5-0.5B-Instruct is not in the Hugging Face cache")
    assert "127.0.0.1:9 unreachable" in msg and "HF_ENDPOINT" in msg and "local model directory" in msg
    assert f"-m {catalog.DEFAULT_MODEL}" in msg and "\n" not in msg
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE is set"):
        resolve_model("qwen2.5-0.5b-instruct")  # an alias means its repository


def test_pull_updates_online_and_keeps_the_cached_copy_offline(hub, monkeypatch):
    path = pull(REPO)
    hub.requests.clear()
    assert pull(REPO) == path and hub.requests  # online: pull asks the Hub for a newer snapshot
    hub.stop()
    notes: list[str] = []
    assert pull(REPO, progress=lambda s, d, t: notes.append(s)) == path
    assert notes and notes[0].startswith(f"kept the cached {REPO}")


def test_snapshot_files_as_plain_files_or_links_elsewhere_load(hub, tmp_path):
    path = resolve_model(REPO)
    elsewhere = tmp_path / "other-disk"
    elsewhere.mkdir()
    for f in list(path.iterdir()):
        target = f.resolve()
        if f.name == "model.safetensors":  # moved to another disk, linked by absolute path
            moved = Path(shutil.move(str(target), elsewhere / "weights"))
            f.unlink()
            f.symlink_to(moved)
        else:  # a plain copy (no symlinks, as on Windows)
            f.unlink()
            shutil.copy(target, f)
    hub.stop()
    from chatcli.engine.loader import load_engine

    engine = load_engine(REPO, warm_up=False)
    assert engine.identity.path == str(path) and engine.context_length > 0


def test_probe_and_offline_switches():
    assert hub_download.probe_hub("http://127.0.0.1:9", timeout=2)
    assert hub_download.endpoint() == "https://huggingface.co"
