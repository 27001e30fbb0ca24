"""Where bare adapter names are looked up, in order: ``./adapters``, the demo adapters, the user folder.

Kept apart from :mod:`chatcli.lora.spec` (which resolves and checks adapters and imports the
adapter manager, hence torch) so shell completion can list the names without loading torch.
"""

from __future__ import annotations

from pathlib import Path


def _package_adapters() -> Path:
    """The demo adapters installed with chatcli (the repository's adapters/ folder)."""
    from importlib.util import find_spec

    spec = find_spec("chatcli.demo_adapters")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(__file__).resolve().parents[2] / "adapters"  # a source checkout not installed


PACKAGE_ADAPTERS = _package_adapters()


def user_adapters_dir() -> Path:
    from chatcli.paths import data_dir

    return data_dir() / "adapters"


def adapter_dirs(cwd: Path | None = None) -> list[Path]:
    """Where bare names are looked up, in order."""
    here = Path.cwd() if cwd is None else Path(cwd)
    return [here / "adapters", PACKAGE_ADAPTERS, user_adapters_dir()]
