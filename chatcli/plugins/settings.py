"""Which plugins load: ``CHATCLI_PLUGINS``, or the ``plugins`` setting of the config file.

``CHATCLI_PLUGINS=name,name`` loads only those, ``none`` none, ``all`` (or unset)
every plugin found. Without the variable, ``plugins = [...]`` (or ``"none"``/``"all"``)
in ``<config dir>/config.toml``, or ``{"plugins": ...}`` in ``config.json``, does
the same (the file is read by :mod:`chatcli.settings.config_file`). User plugin files
live in ``<config dir>/plugins/``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

ENV = "CHATCLI_PLUGINS"


def user_plugin_dir() -> Path:
    from chatcli.paths import config_dir

    return config_dir() / "plugins"


def selection_setting() -> tuple[str | list | None, str]:
    """The raw plugin selection and where it came from (env var, config file, or default).

    Raises ValueError (naming the file) when the config file cannot be read.
    """
    value = os.environ.get(ENV)
    if value is not None and value.strip():
        return value, ENV
    from chatcli.settings.config_file import ConfigError, ConfigUnreadable, load

    try:
        config = load()
    except (ConfigError, ConfigUnreadable) as e:
        raise ValueError(f"cannot read {e.path} ({e.reason})") from None
    if config.path is None:
        return None, "default"
    return config.data.get("plugins"), str(config.path)


def parse_selection(value: str | Sequence[str] | None) -> set[str] | None:
    """``None``/"all" -> every plugin; "none"/[] -> no plugin; "a,b" or ["a", "b"] -> those."""
    if value is None:
        return None
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("", "all", "*"):
            return None
        if v == "none":
            return set()
        return {p.strip() for p in value.split(",") if p.strip()}
    if isinstance(value, (list, tuple)) and all(isinstance(p, str) for p in value):
        return {p.strip() for p in value if p.strip()}
    raise ValueError(f"'plugins' must be \"all\", \"none\" or a list of names, not {value!r}")

