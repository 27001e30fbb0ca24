"""What a wheel installs: every package folder, the TUI styles and the demo adapters."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
