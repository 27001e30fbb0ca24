"""Named presets: a model, a system message, sampling values and adapters under one name.

Like an Ollama Modelfile or an ``llm`` template: ``chatcli generate --preset terse "..."``.
Each preset is one flat TOML file, ``<config dir>/presets/NAME.toml``, with the keys of
``[defaults]`` (:data:`chatcli.settings.keys.KEYS`)::

    model = "smollm2-135m-instruct"
    system = "Answer in one sentence."
    temperature = 0.2
    adapters = ["pirate:0.5"]

Names are 1-64 letters, digits, ``.``, ``_`` or ``-``, starting with a letter or digit (a
name is a file name: no ``/``, no ``..``). :func:`save_preset` checks every value and
replaces the file atomically (temporary file, fsync, rename), so a preset is the old one
or the new one, never half of one. Problems are one line: an unknown preset lists the
known ones (:class:`UnknownPreset`, exit 2), a bad file names its key
(:class:`~chatcli.settings.config_file.ConfigError`, exit 2), a folder that cannot be
read is :class:`PresetsUnreadable` (exit 1). Reading writes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from chatcli.errors import ChatcliError, UsageError, did_you_mean
from chatcli.settings.config_file import ConfigError, check_table

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SUFFIX = ".toml"


class UnknownPreset(UsageError):
    """No preset of that name."""


class PresetsUnreadable(ChatcliError):
    """The presets folder or a preset file cannot be read (permissions, not a regular file)."""


@dataclass(frozen=True)
class Preset:
    name: str
    path: Path
    values: dict[str, object]  # checked, in the file's order


def presets_dir() -> Path:
    """``<config dir>/presets`` (not created until a preset is saved)."""
    from chatcli.paths import config_dir

    return config_dir() / "presets"


def check_name(name: str) -> str:
    """``name`` if it can name a preset; a one-line :class:`UsageError` if not."""
    if not NAME_RE.fullmatch(name) or name.endswith("."):
        raise UsageError(f"invalid preset name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return name


def names() -> list[str]:
    """The saved presets' names, sorted; cheap (no file is parsed): completion calls it."""
    folder = presets_dir()
    try:
        entries = list(folder.iterdir()) if folder.is_dir() else []
    except OSError as e:
        raise PresetsUnreadable(f"cannot read the presets folder {folder} ({e.strerror}); check its permissions") from None
    found = (p.name[: -len(SUFFIX)] for p in entries if p.name.endswith(SUFFIX))
    return sorted(n for n in found if NAME_RE.fullmatch(n) and not n.endswith("."))


def load_preset(name: str) -> Preset:
    """The preset ``name``, every value checked; :class:`UnknownPreset` lists the known ones."""
    from chatcli.regular_file import read_bytes
    from chatcli.settings.toml_io import parse

    check_name(name)
    path = presets_dir() / f"{name}{SUFFIX}"
    try:
        raw = read_bytes(path, "preset file")
    except FileNotFoundError:
        known = names()
        listed = f"the presets are {', '.join(known)}" if known else "there are no presets yet"
        raise UnknownPreset(f"unknown preset {name!r}{did_you_mean(name, known)}: {listed} "
                            "(save one with `chatcli presets save NAME`)") from None
    except ChatcliError:
        raise PresetsUnreadable(f"cannot read the preset file {path} (not a regular file); move it away") from None
    except OSError as e:
        raise PresetsUnreadable(f"cannot read the preset file {path} ({e.strerror}); check its permissions") from None
    try:
        data = parse(raw)
    except ValueError as e:
        raise ConfigError(path, " ".join(str(e).split()), hint="fix it or save the preset again") from None
    return Preset(name, path, check_table(data, path, f"preset {name!r}:"))


def save_preset(name: str, values: dict[str, object]) -> Path:
    """Write ``values`` (checked first) as the preset ``name``, replacing any old one atomically."""
    from chatcli.paths import write_text_atomic as write_atomic
    from chatcli.settings.toml_io import dumps

    check_name(name)
    folder = presets_dir()
    path = folder / f"{name}{SUFFIX}"
    checked = check_table(dict(values), path, f"preset {name!r}:")
    if not checked:
        raise UsageError(f"preset {name!r} would be empty: give at least one of --model, --system, --temperature, ... "
                         "or --from-config")
    text = dumps(checked, header=f"chatcli preset {name!r}: chatcli generate --preset {name} ...")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)
    except OSError as e:
        raise ChatcliError(f"cannot save the preset {path} ({e.strerror}); check the folder's permissions") from None
    return path
