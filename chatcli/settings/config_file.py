"""THE reader of chatcli's config file: ``<config dir>/config.toml``, or ``config.json``.

One file, two top-level keys (:data:`TOP_LEVEL`)::

    plugins = ["rank"]            # which plugins load: chatcli.plugins.settings reads it

    [defaults]                    # what every command starts from (chatcli.settings.keys)
    model = "smollm2-135m-instruct"
    temperature = 0.3
    adapters = ["pirate:0.5"]

``config.json`` holds the same as ``{"plugins": [...], "defaults": {...}}``; when both files
exist, ``config.toml`` is read. No file means no settings.

:func:`load` parses the file (raw data, nothing checked: plugin selection reads only its
own key and must survive a bad ``[defaults]``); :func:`read_defaults` checks the
top-level keys and every ``[defaults]`` value and returns them. A problem is one line
naming the file and the key: :class:`ConfigError` (exit 2) for content — malformed TOML
with its line, an unknown key with a did-you-mean, a wrong type or range — and
:class:`ConfigUnreadable` (exit 1) for a file that cannot be read (permissions, a FIFO).
Reading writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from chatcli.errors import ChatcliError, UsageError, did_you_mean
from chatcli.settings.keys import KEYS, BadValue, check_value

TOP_LEVEL = {
    "plugins": "which plugins load: a list of names, \"all\" or \"none\"",
    "defaults": "a table of values every command starts from",
}


class ConfigError(UsageError):
    """The config file says something chatcli cannot use. ``path`` and ``reason`` separately."""

    def __init__(self, path: Path, reason: str, hint: str = "fix it or move the file away") -> None:
        self.path, self.reason = path, reason
        super().__init__(f"config file {path}: {reason}; {hint}")


class ConfigUnreadable(ChatcliError):
    """The config file exists but cannot be read (permissions, not a regular file)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"cannot read the config file {path} ({reason}); check its permissions or move it away")


@dataclass(frozen=True)
class ConfigFile:
    """The parsed file: ``path`` None when there is none; ``data`` as the parser gave it."""

    path: Path | None
    data: dict = field(default_factory=dict)


def candidates() -> tuple[Path, Path]:
    """``config.toml`` and ``config.json`` in the config directory, in the order they are tried."""
    from chatcli.paths import config_dir

    folder = config_dir()
    return folder / "config.toml", folder / "config.json"


def find() -> Path | None:
    """The config file that is read, or None."""
    return next((p for p in candidates() if p.is_file() or _exists_not_dir(p)), None)


def _exists_not_dir(path: Path) -> bool:
    """A FIFO or device named config.toml is still *the* config file: reading it gives the error."""
    return path.exists() and not path.is_dir()


def load() -> ConfigFile:
    """The config file parsed; :class:`ConfigError` or :class:`ConfigUnreadable` if it cannot be."""
    from chatcli import bounded_json
    from chatcli.regular_file import read_bytes
    from chatcli.settings.toml_io import parse

    path = find()
    if path is None:
        return ConfigFile(None, {})
    try:
        raw = read_bytes(path, "config file")
    except ChatcliError:  # a FIFO, a device, a socket: never waited on
        raise ConfigUnreadable(path, "not a regular file") from None
    except OSError as e:
        raise ConfigUnreadable(path, e.strerror or type(e).__name__) from None
    try:
        data = parse(raw) if path.suffix == ".toml" else bounded_json.loads(raw, unique_keys=True)
    except ValueError as e:
        raise ConfigError(path, " ".join(str(e).split())) from None
    if not isinstance(data, dict):
        raise ConfigError(path, f"the top level must be an object, not {type(data).__name__}")
    return ConfigFile(path, data)


def read_defaults(config: ConfigFile | None = None) -> dict[str, object]:
    """The checked ``[defaults]`` of ``config`` (default: :func:`load`); {} without a file.

    Also refuses an unknown top-level key (``[default]`` for ``[defaults]`` would otherwise
    be ignored without a word).
    """
    config = load() if config is None else config
    if config.path is None:
        return {}
    path = config.path
    for key in config.data:
        if key not in TOP_LEVEL:
            raise ConfigError(path, f"unknown key {key!r}{did_you_mean(key, TOP_LEVEL)}",
                              hint=f"the top-level keys are {', '.join(TOP_LEVEL)}")
    table = config.data.get("defaults", {})
    if not isinstance(table, dict):
        raise ConfigError(path, f"'defaults' must be a table ([defaults]), not {type(table).__name__}")
    return check_table(table, path, "[defaults]")


def check_table(table: dict, path: Path, where: str) -> dict[str, object]:
    """Every key of ``table`` known and its value checked; :class:`ConfigError` naming ``where`` in ``path``."""
    checked: dict[str, object] = {}
    for key, value in table.items():
        if key not in KEYS:
            raise ConfigError(path, f"unknown key {key!r} in {where}{did_you_mean(key, KEYS)}",
                              hint=f"the keys are {', '.join(KEYS)}")
        try:
            checked[key] = check_value(key, value)
        except BadValue as e:
            raise ConfigError(path, f"{where} {key} {e}") from None
    return checked
