"""Which plugins load: ``CHATCLI_PLUGINS``, or the ``plugins`` setting of the config file.

``CHATCLI_PLUGINS=name,name`` loads only those, ``none`` none, ``all`` (or unset)
every plugin found. Without the variable, ``plugins = [...]`` (or ``"none"``/``"all"``)
in ``<config dir>/config.toml``, or ``{"plugins": ...}`` in ``config.json``, does
the same. User plugin files live in ``<config dir>/plugins/``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from chatcli import bounded_json
from chatcli.errors import ChatcliError
from chatcli.regular_file import open_regular, read_bytes

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
    from chatcli.paths import config_dir

    folder = config_dir()
    toml_path, json_path = folder / "config.toml", folder / "config.json"
    try:
        if toml_path.is_file():
            return _read_toml(toml_path).get("plugins"), str(toml_path)
        if json_path.is_file():
            data = bounded_json.loads(read_bytes(json_path, "config file"))  # a regular file, nesting bounded
            return (data.get("plugins") if isinstance(data, dict) else None), str(json_path)
    except (OSError, ValueError, ChatcliError) as e:
        where = toml_path if toml_path.is_file() else json_path
        raise ValueError(f"cannot read {where} ({' '.join(str(e).split())})") from None
    return None, "default"


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


def _read_toml(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise ValueError("reading config.toml needs Python 3.11 or the tomli package; use config.json") from None
    with open_regular(path, "config file") as f:
        try:
            return tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(str(e)) from None
        except RecursionError:  # tomllib recurses once per nested array or inline table
            raise ValueError("nested too deeply") from None
