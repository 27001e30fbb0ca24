"""What a wheel installs (every package folder, the TUI styles, the demo adapters), under which
distribution name and metadata, and what scripts/bootstrap does (an older install, where torch comes from)."""

from __future__ import annotations

import ast
import functools
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

import chatcli

ROOT = Path(__file__).resolve().parent.parent
DIST = "chatcli-lab"  # "chatcli" on PyPI is an unrelated project


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    mapped = {pkg: ROOT / folder for pkg, folder in config["package-dir"].items()}
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "chatcli").rglob("__init__.py")}
    for pkg, folder in mapped.items():  # a plugin's sub-packages (chatcli_finetune.rl) install only when listed
        found |= {".".join([pkg, *p.parent.relative_to(folder).parts]) for p in folder.rglob("__init__.py")}
    assert found | set(mapped) == listed
    assert all((folder / "__init__.py").is_file() for folder in mapped.values())
    # every first-party plugin folder installs, under a name of ours
    plugin_folders = {p.parent for p in (ROOT / "plugins").glob("*/__init__.py")}
    assert plugin_folders == {folder for pkg, folder in mapped.items() if pkg.startswith("chatcli_")}


def test_only_our_own_top_level_names_install():
    """No generic top-level package (``plugins``, ``adapters``, ``tests``, ``benchmarks``) in a wheel."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    tops = {pkg.split(".")[0] for pkg in config["packages"]}
    assert tops == {"chatcli", "chatcli_rank", "chatcli_finetune"}
    assert not (ROOT / "plugins" / "__init__.py").exists()


def test_demo_adapters_resolve_by_name():
    from chatcli.lora.spec import PACKAGE_ADAPTERS, resolve_adapter

    for name in ("pirate", "concise"):
        assert (PACKAGE_ADAPTERS / name / "adapter_model.safetensors").is_file()
        spec = resolve_adapter(name, cwd=ROOT / "tests")  # not via ./adapters: the installed copy
        assert spec.name == name and spec.path.resolve() == (PACKAGE_ADAPTERS / name).resolve()


def test_distribution_name_is_ours_and_the_version_is_written_once():
    project = _pyproject()["project"]
    assert project["name"] == DIST
    assert project["scripts"] == {"chatcli": "chatcli.cli.main:main"}  # the command keeps its name
    assert "version" in project["dynamic"] and "version" not in project
    assert _pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "chatcli.__version__"}


def test_the_installed_distribution_says_what_pyproject_says():
    """scripts/bootstrap installed DIST (and removed the old "chatcli" distribution)."""
    dist = metadata.distribution(DIST)
    assert dist.version == chatcli.__version__
    assert dist.metadata["License-Expression"] == "Apache-2.0"
    assert (ROOT / "LICENSE").read_text().split()[:3] == ["Apache", "License", "Version"]
    plugins = {e.name: e.value for e in dist.entry_points.select(group="chatcli.plugins")}
    assert plugins == {"rank": "chatcli_rank", "finetune": "chatcli_finetune"}
    assert [e.value for e in dist.entry_points.select(group="console_scripts")] == ["chatcli.cli.main:main"]
    assert not list(metadata.distributions(name="chatcli"))


def _old_dist():
    spec = importlib.util.spec_from_file_location("old_dist", ROOT / "scripts" / "old_dist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.old_dist


def _fake_dist(site: Path, version: str, entry_points: str = "", direct_url: dict | None = None) -> None:
    info = site / f"chatcli-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: chatcli\nVersion: {version}\n", encoding="utf-8")
    if entry_points:
        (info / "entry_points.txt").write_text(entry_points, encoding="utf-8")
    if direct_url is not None:
        (info / "direct_url.json").write_text(json.dumps(direct_url), encoding="utf-8")


def test_bootstrap_removes_only_our_old_distribution(tmp_path):
    old_dist = _old_dist()
    assert old_dist(ROOT, [str(tmp_path / "empty")]) is None
    by_plugins = tmp_path / "a"  # our old wheel, installed from anywhere: it registers chatcli_rank
    _fake_dist(by_plugins, "0.1.0", "[chatcli.plugins]\nrank = chatcli_rank\nfinetune = chatcli_finetune\n")
    assert old_dist(ROOT, [str(by_plugins)]) == "ours"
    from_here = tmp_path / "b"  # pip's record says it came from this checkout
    _fake_dist(from_here, "0.1.0", direct_url={"url": ROOT.as_uri(), "dir_info": {"editable": True}})
    assert old_dist(ROOT, [str(from_here)]) == "ours"
    unrelated = tmp_path / "c"  # PyPI's chatcli, or one built from some other folder
    _fake_dist(unrelated, "0.1.20", "[console_scripts]\nchatcli = chatcli.main:main\n",
               direct_url={"url": (tmp_path / "elsewhere").as_uri(), "dir_info": {}})
    assert old_dist(ROOT, [str(unrelated)]) == "other"


# Imported only by `chatcli bench --baseline ...`, which names the package to install when it is missing.
OPTIONAL_IMPORTS = {"transformers", "peft", "llama_cpp"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_third_party_import_is_a_declared_dependency():
    """A module the installed code imports comes from a distribution pyproject names (click, say, only
    arrives through other packages: chatcli uses typer's own copy)."""
    ours = {"chatcli", "chatcli_rank", "chatcli_finetune"}
    imported: dict[str, str] = {}
    for folder in (ROOT / "chatcli", ROOT / "plugins"):
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
                for top in {n.split(".")[0] for n in names} - ours - set(sys.stdlib_module_names):
                    imported.setdefault(top, str(path.relative_to(ROOT)))
    declared = {_normal(re.match(r"[A-Za-z0-9._-]+", d).group()) for d in _pyproject()["project"]["dependencies"]}
    providers = metadata.packages_distributions()
    undeclared = {
        top: where for top, where in imported.items()
        if top not in OPTIONAL_IMPORTS and not declared & {_normal(d) for d in providers.get(top, [top])}
    }
    assert undeclared == {}


def _torch_index(env: dict, path_dirs: tuple[Path, ...] = ()) -> subprocess.CompletedProcess:
    """scripts/torch-index run with only ``env`` (plus PATH), as scripts/bootstrap runs it."""
    search = os.pathsep.join([*map(str, path_dirs), os.environ.get("PATH", "")])
    return subprocess.run([str(ROOT / "scripts" / "torch-index"), sys.executable], capture_output=True,
                          text=True, timeout=30, env={"PATH": search, "HOME": os.environ.get("HOME", "/"), **env})


def _fake_command(folder: Path, name: str, script: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(f"#!/bin/sh\n{script}\n")
    (folder / name).chmod(0o755)
    return folder


def test_torch_index_named_by_hand_wins():
    assert _torch_index({"CHATCLI_TORCH_INDEX": "https://example.org/whl/cu126"}).stdout == "https://example.org/whl/cu126\n"
    assert _torch_index({"CHATCLI_TORCH_INDEX": ""}).stdout == ""  # pip's own index


def test_torch_index_is_pips_own_on_macos_and_with_an_nvidia_gpu(tmp_path):
    darwin = _fake_command(tmp_path / "mac", "uname", "echo Darwin")
    assert _torch_index({"CHATCLI_TORCH_CPU_INDEX": "http://127.0.0.1:9"}, (darwin,)).stdout == ""
    gpu = _fake_command(tmp_path / "gpu", "nvidia-smi", "exit 0")
    done = _torch_index({"CHATCLI_TORCH_CPU_INDEX": "http://127.0.0.1:9"}, (gpu,))
    assert (done.stdout, done.stderr) == ("", "")  # no probe, nothing to say


NVIDIA = Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi")


@pytest.mark.skipif(sys.platform != "linux" or bool(NVIDIA), reason="the CPU build is chosen on Linux without an NVIDIA GPU")
def test_torch_index_is_the_cpu_one_when_it_answers_else_pips_own(tmp_path):
    (tmp_path / "torch").mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/"
        done = _torch_index({"CHATCLI_TORCH_CPU_INDEX": url})
        assert (done.stdout, done.stderr) == (url.rstrip("/") + "\n", "")
    finally:
        server.shutdown()
        server.server_close()
    started = time.monotonic()
    done = _torch_index({"CHATCLI_TORCH_CPU_INDEX": url})  # nobody listens any more
    assert done.returncode == 0 and done.stdout == "" and time.monotonic() - started < 10
    assert done.stderr == f"bootstrap: PyTorch's CPU index ({url.rstrip('/')}) cannot be reached; torch comes from pip's own index\n"
