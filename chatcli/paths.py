"""Where chatcli keeps its files: the user cache, data and config directories.

``CHATCLI_HOME`` overrides the root for all three (``$CHATCLI_HOME/cache``,
``/data``, ``/config``), so tests and portable installs use one folder; without it
the platform's usual places are used (platformdirs). Directories are created on
first use. Converted models live under ``models_dir()``.

``replace_dir`` and the fsync helpers make cache entries appear whole or not at all.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

APP_NAME = "chatcli"
HOME_ENV = "CHATCLI_HOME"


def _root() -> Path | None:
    home = os.environ.get(HOME_ENV)
    return Path(home).expanduser() if home else None


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _user_dir(kind: str) -> Path:
    """``$CHATCLI_HOME/<kind>`` when set, else platformdirs' ``user_<kind>_dir``; created."""
    root = _root()
    if root is not None:
        return _ensure(root / kind)
    import platformdirs

    return _ensure(Path(getattr(platformdirs, f"user_{kind}_dir")(APP_NAME)))


def cache_dir() -> Path:
    """Re-creatable files: converted models, downloads in progress."""
    return _user_dir("cache")


def data_dir() -> Path:
    """Files a person would miss: sessions, rankings, adapters."""
    return _user_dir("data")


def config_dir() -> Path:
    """Settings and user plugins."""
    return _user_dir("config")


def ui_state_path() -> Path:
    """The chat TUI's remembered view settings (tint, panel), a small JSON file (chatcli/tui/ui_state.py)."""
    return config_dir() / "ui-state.json"


def models_dir() -> Path:
    """One sub-directory per model, each a complete HF-style directory."""
    return _ensure(cache_dir() / "models")


def replace_dir(new: Path, dest: Path) -> None:
    """Move the finished directory ``new`` to ``dest``; an existing ``dest`` is swapped out, then removed.

    Both renames stay inside one parent directory, so each is atomic: a reader sees the
    old entry, no entry, or the new one, never a half-written one.
    """
    old = None
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(dest, old)
    os.rename(new, dest)
    fsync_dir(dest.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (POSIX; a no-op elsewhere)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) whole and durably: a temporary sibling, fsync, rename,
    fsync of the folder. Nothing is left behind if writing fails; OSError when it cannot be written."""
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "x", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
