"""Where chatcli keeps its files: the user cache, data and config directories.

``CHATCLI_HOME`` overrides the root for all three (``$CHATCLI_HOME/cache``,
``/data``, ``/config``), so tests and portable installs use one folder; without it
the platform's usual places are used (platformdirs). Directories are created on
first use. Converted models live under ``models_dir()``.
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "chatcli"
HOME_ENV = "CHATCLI_HOME"


def _root() -> Path | None:
    home = os.environ.get(HOME_ENV)
    return Path(home).expanduser() if home else None


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Re-creatable files: converted models, downloads in progress."""
    root = _root()
    if root is not None:
        return _ensure(root / "cache")
    import platformdirs

    return _ensure(Path(platformdirs.user_cache_dir(APP_NAME)))


def data_dir() -> Path:
    """Files a person would miss: sessions, rankings, adapters."""
    root = _root()
    if root is not None:
        return _ensure(root / "data")
    import platformdirs

    return _ensure(Path(platformdirs.user_data_dir(APP_NAME)))


def config_dir() -> Path:
    """Settings and user plugins."""
    root = _root()
    if root is not None:
        return _ensure(root / "config")
    import platformdirs

    return _ensure(Path(platformdirs.user_config_dir(APP_NAME)))


def models_dir() -> Path:
    """One sub-directory per model, each a complete HF-style directory."""
    return _ensure(cache_dir() / "models")
